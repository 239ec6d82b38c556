/* The guessing game's interactor, speaking testlib's conventions without testlib.h:
 * run as `interactor input output answer`; reads "n secret" from the input file, tells the
 * solution n, then answers each guess with "<" (the secret is smaller), ">" (larger) or "="
 * (found). A solution gets as many guesses as binary search needs. Exit codes: 0 ok,
 * 1 wrong answer, 2 presentation error, 3 fail (a bug here or in the test); the verdict
 * line goes to stderr, the number of guesses to the output file (testlib's tout). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

enum { OK = 0, WA = 1, PE = 2, FAIL = 3 };

static void quit(int code, const char *fmt, ...) {
    static const char *prefix[] = {"ok", "wrong answer", "wrong output format", "FAIL"};
    va_list ap;
    fprintf(stderr, "%s ", prefix[code]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

int main(int argc, char **argv) {
    if (argc < 3)
        quit(FAIL, "usage: interactor input output [answer]");
    FILE *in = fopen(argv[1], "r");
    long long n, secret;
    if (!in || fscanf(in, "%lld %lld", &n, &secret) != 2 || n < 1 || secret < 1 || secret > n)
        quit(FAIL, "the input file is not \"n secret\" with 1 <= secret <= n");
    FILE *tout = fopen(argv[2], "w");
    int limit = 0;
    while (limit < 62 && (1LL << limit) <= n)
        limit++;
    printf("%lld\n", n);
    fflush(stdout);
    for (int guesses = 1;; guesses++) {
        long long x;
        int got = scanf("%lld", &x);
        if (got == EOF)
            quit(PE, "unexpected end of file after %d guesses", guesses - 1);
        if (got != 1)
            quit(PE, "guess %d is not a number", guesses);
        if (x < 1 || x > n)
            quit(WA, "guess %d: %lld is outside 1..%lld", guesses, x, n);
        if (x == secret) {
            printf("=\n");
            fflush(stdout);
            if (tout)
                fprintf(tout, "%d\n", guesses);
            quit(OK, "found %lld in %d guesses", secret, guesses);
        }
        if (guesses >= limit)
            quit(WA, "no guesses left after %d (binary search needs at most %d)", guesses, limit);
        printf("%s\n", secret < x ? "<" : ">");
        fflush(stdout);
    }
}
