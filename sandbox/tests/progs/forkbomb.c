// forkbomb SECONDS: every process forks until the deadline; prints how many forks failed.
// The deadline is SECONDS on the monotonic clock from the start: a deadline in whole seconds
// of time() would end the bomb within milliseconds when it starts just before a second ticks.
// A failed fork waits a little: a loop of failing forks as fast as the CPU goes fills the
// memory cgroup with copies of the address space freed only after an RCU grace period (an
// out-of-memory end under load), which is not what the pids tests are about.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int secs = argc > 1 ? atoi(argv[1]) : 1;
    double end = now() + secs;
    long failed = 0, ok = 0;
    pid_t root = getpid();
    while (now() < end) {
        pid_t p = fork();
        if (p < 0) { failed++; usleep(200); }
        else if (p == 0) continue;
        else ok++;
        if (getpid() != root) { usleep(1000); }
    }
    if (getpid() == root) {
        while (wait(NULL) > 0) {}
        printf("ok=%ld failed=%ld\n", ok, failed);
    }
    return 0;
}
