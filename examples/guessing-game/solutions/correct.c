/* Binary search: guess the middle, keep the half the answer points to. */
#include <stdio.h>

int main(void) {
    long long lo = 1, hi;
    if (scanf("%lld", &hi) != 1)
        return 1;
    while (lo <= hi) {
        long long mid = lo + (hi - lo) / 2;
        char reply[2];
        printf("%lld\n", mid);
        fflush(stdout);
        if (scanf("%1s", reply) != 1 || reply[0] == '=')
            return 0;
        if (reply[0] == '<')
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return 0;
}
