// `traces leave`: leaves one trace of each kind a run can leave in its sandbox: files in the
// work directory, /tmp and /dev/shm, SysV shared memory, a message queue and a semaphore set,
// a POSIX message queue, an abstract unix socket held by a daemon, 48 MiB of memory touched.
// (The hostname cannot be changed: sethostname is denied.) `traces find`: prints every trace of an earlier run it finds, one per line,
// then "looked"; exits 0.
#include <fcntl.h>
#include <stddef.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define KEY 0x5a4d
static const char *files[] = {"/work/trace", "/tmp/trace", "/dev/shm/trace"};

static struct sockaddr_un abstract(socklen_t *len) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path + 1, "sandpit-trace", 13);
    *len = offsetof(struct sockaddr_un, sun_path) + 1 + 13;
    return a;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "leave") == 0) {
        for (int i = 0; i < 3; i++) {
            int fd = open(files[i], O_CREAT | O_WRONLY, 0644);
            if (fd < 0 || write(fd, "x", 1) != 1) { perror(files[i]); return 1; }
            close(fd);
        }
        if (shmget(KEY, 4096, IPC_CREAT | 0666) < 0) { perror("shmget"); return 1; }
        if (msgget(KEY, IPC_CREAT | 0666) < 0) { perror("msgget"); return 1; }
        if (semget(KEY, 1, IPC_CREAT | 0666) < 0) { perror("semget"); return 1; }
        struct mq_attr attr = {.mq_maxmsg = 1, .mq_msgsize = 16};
        if (mq_open("/sandpit-trace", O_CREAT | O_RDWR, 0666, &attr) < 0) { perror("mq_open"); return 1; }
        char *m = malloc(48 << 20);
        if (!m) return 1;
        memset(m, 1, 48 << 20);
        socklen_t len;
        struct sockaddr_un a = abstract(&len);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s < 0 || bind(s, (struct sockaddr *)&a, len) < 0 || listen(s, 1) < 0) { perror("bind"); return 1; }
        if (fork() == 0) { setsid(); if (fork() == 0) { sleep(60); return 0; } return 0; }
        puts("left");
        return 0;
    }
    for (int i = 0; i < 3; i++)
        if (access(files[i], F_OK) == 0) printf("file %s\n", files[i]);
    if (shmget(KEY, 0, 0) >= 0) puts("sysv shm");
    if (msgget(KEY, 0) >= 0) puts("sysv msg");
    if (semget(KEY, 0, 0) >= 0) puts("sysv sem");
    if (mq_open("/sandpit-trace", O_RDONLY) >= 0) puts("posix mq");
    socklen_t len;
    struct sockaddr_un a = abstract(&len);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, len) == 0) puts("abstract socket");
    // Processes other than init (1) and this one (2).
    for (int pid = 3; pid < 64; pid++) {
        char path[32];
        snprintf(path, sizeof path, "/proc/%d", pid);
        if (access(path, F_OK) == 0) printf("process %d\n", pid);
    }
    puts("looked");
    return 0;
}
