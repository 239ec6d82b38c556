// forkbomb SECONDS: every process forks until the deadline; prints how many forks failed.
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    int secs = argc > 1 ? atoi(argv[1]) : 1;
    time_t end = time(NULL) + secs;
    long failed = 0, ok = 0;
    pid_t root = getpid();
    while (time(NULL) < end) {
        pid_t p = fork();
        if (p < 0) failed++;
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
