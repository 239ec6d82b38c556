/* Counts up from 1: right, but far too many guesses once n is large. */
#include <stdio.h>

int main(void) {
    long long n;
    if (scanf("%lld", &n) != 1)
        return 1;
    for (long long x = 1; x <= n; x++) {
        char reply[2];
        printf("%lld\n", x);
        fflush(stdout);
        if (scanf("%1s", reply) != 1 || reply[0] == '=')
            return 0;
    }
    return 0;
}
