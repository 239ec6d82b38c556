// Double-forks a daemon that sleeps 60 s holding nothing, then exits 0 at once.
#include <unistd.h>
#include <fcntl.h>
int main(void) {
    if (fork() == 0) {
        setsid();
        if (fork() == 0) {
            int fd = open("/dev/null", O_RDWR);
            dup2(fd, 0); dup2(fd, 1); dup2(fd, 2);
            sleep(60);
            return 0;
        }
        return 0;
    }
    return 0;
}
