// Holds memory in ways that are not the process's own heap, until the memory cgroup's OOM
// killer acts: memkinds tmpfs|memfd|pipes|sockets|procs MIB
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
static char chunk[65536];
static void fill(int fd, long bytes) {
    for (long done = 0; done < bytes;) {
        long n = write(fd, chunk, sizeof chunk);
        if (n <= 0) return;
        done += n;
    }
}
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long mib = atol(argv[2]);
    memset(chunk, 'x', sizeof chunk);
    if (!strcmp(argv[1], "tmpfs")) {
        int fd = open("/tmp/x", O_CREAT | O_WRONLY, 0600);
        fill(fd, mib << 20);
    } else if (!strcmp(argv[1], "memfd")) {
        int fd = memfd_create("m", 0);
        fill(fd, mib << 20);
    } else if (!strcmp(argv[1], "pipes")) {
        // Each pipe holds up to 1 MiB when enlarged; nobody reads.
        for (long i = 0; i < mib; i++) {
            int p[2];
            if (pipe2(p, O_NONBLOCK) < 0) break;
            fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
            fill(p[1], 1 << 20);
        }
    } else if (!strcmp(argv[1], "sockets")) {
        for (long i = 0; i < mib * 4; i++) {
            int s[2];
            if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s) < 0) break;
            int big = 1 << 20;
            setsockopt(s[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
            fill(s[0], 256 << 10);
        }
    } else if (!strcmp(argv[1], "procs")) {
        // Many small processes: each costs kernel memory (stack, page tables, task).
        for (long i = 0; i < mib; i++) {
            pid_t p = fork();
            if (p == 0) { pause(); _exit(0); }
            if (p < 0) break;
        }
    }
    printf("survived\n");
    fflush(stdout);
    pause();
    return 0;
}
