// Prints whether this process's network namespace is owned by its own user namespace (not the
// host's: a host-owned network namespace receives the host's device uevents).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/nsfs.h>
int main(void) {
    int net = open("/proc/self/ns/net", O_RDONLY);
    int owner = ioctl(net, NS_GET_USERNS);
    struct stat a, b;
    if (owner < 0 || fstat(owner, &a) < 0 || stat("/proc/self/ns/user", &b) < 0) {
        perror("ns");
        return 1;
    }
    printf("netns owned by own userns: %d\n", a.st_ino == b.st_ino);
    return 0;
}
