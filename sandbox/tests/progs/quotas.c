// Takes a per-user kernel quota and holds it: quotas inotify|pipes|signals|pipecheck
// Prints "holding N" once it holds N of the resource (then waits), or for pipecheck the
// default pipe size and whether a pipe may grow to 1 MiB.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    long n = 0;
    if (!strcmp(argv[1], "inotify")) {
        while (inotify_init1(IN_CLOEXEC) >= 0) n++;
    } else if (!strcmp(argv[1], "pipes")) {
        // Grow pipes until the per-user soft limit of pipe buffers refuses.
        for (;;) {
            int p[2];
            if (pipe(p) < 0) break;
            if (fcntl(p[1], F_SETPIPE_SZ, 1 << 20) < 0) break;
            n++;
        }
    } else if (!strcmp(argv[1], "signals")) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGRTMIN);
        sigprocmask(SIG_BLOCK, &set, NULL);
        union sigval v = {0};
        while (sigqueue(getpid(), SIGRTMIN, v) == 0) n++;
    } else if (!strcmp(argv[1], "pipecheck")) {
        int p[2];
        if (pipe(p) < 0) return 1;
        int size = fcntl(p[1], F_GETPIPE_SZ);
        int grown = fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
        printf("default %d grow %d %d\n", size, grown, grown < 0 ? errno : 0);
        return 0;
    }
    printf("holding %ld errno %d\n", n, errno);
    fflush(stdout);
    pause();
    return 0;
}
