// Tries syscalls the policy denies and prints "name errno" for each.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/keyctl.h>
static void show(const char *name, long r) { printf("%s %ld %d\n", name, r, r < 0 ? errno : 0); }
int main(void) {
    show("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    show("unshare", unshare(CLONE_NEWUSER));
    show("ptrace", ptrace(PTRACE_TRACEME, 0, 0, 0));
    show("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    show("bpf", syscall(SYS_bpf, 0, 0, 0));
    show("io_uring_setup", syscall(SYS_io_uring_setup, 1, 0));
    show("vsock", socket(40, SOCK_STREAM, 0));
    show("chroot", chroot("/tmp"));
    show("kill1", kill(1, 9));
    fflush(stdout);
    return 0;
}
