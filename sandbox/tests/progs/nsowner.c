// Prints who owns this process's network namespace, as far as it can tell: its own user
// namespace, or one outside its view (EPERM), which the engine made for it. A host-owned
// network namespace would receive the host's device uevents; the engine's unit tests check
// from the host's side that the owner is not the host's user namespace.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/nsfs.h>
int main(void) {
    int net = open("/proc/self/ns/net", O_RDONLY);
    int owner = ioctl(net, NS_GET_USERNS);
    if (owner < 0 && errno == EPERM) {
        printf("netns owner: outside this sandbox\n");
        return 0;
    }
    struct stat a, b;
    if (owner < 0 || fstat(owner, &a) < 0 || stat("/proc/self/ns/user", &b) < 0) {
        perror("ns");
        return 1;
    }
    printf("netns owner: %s\n", a.st_ino == b.st_ino ? "its own user namespace" : "another");
    return 0;
}
