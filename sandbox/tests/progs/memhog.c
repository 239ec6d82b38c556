// memhog MIB: allocates and touches MIB mebibytes, then exits 0.
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 100;
    for (long i = 0; i < mib; i++) {
        char *p = malloc(1 << 20);
        if (!p) return 3;
        memset(p, 1, 1 << 20);
    }
    return 0;
}
