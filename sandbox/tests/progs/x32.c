// Calls getpid through the x32 ABI (syscall number | 0x40000000): the filter must kill it.
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    long r = syscall(0x40000000 | SYS_getpid);
    printf("survived %ld\n", r);
    return 0;
}
