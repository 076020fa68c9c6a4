/* LD_PRELOAD shim: a disk that fills up. Every pwrite/pwritev to a file whose path contains $FW_PATH fails
 * with ENOSPC ($FW_ERRNO) once $FW_SKIP such writes have gone through; other files are left alone.
 * Built by tests/test_pull.py (cc -shared -fPIC); after docs/investigations/err217 (issue 15). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off_t);
static atomic_long skip = 0;
static const char *want;
static int err = ENOSPC;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_pwritev64 = dlsym(RTLD_NEXT, "pwritev64");
    want = getenv("FW_PATH");
    const char *s = getenv("FW_SKIP");
    atomic_store(&skip, s ? atol(s) : 0);
    const char *e = getenv("FW_ERRNO");
    if (e) err = atoi(e);
}

static int fails(int fd) {
    pthread_once(&once, init);
    if (!want || !*want) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    if (!strstr(path, want)) return 0;
    return atomic_fetch_sub(&skip, 1) <= 0;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    if (fails(fd)) { errno = err; return -1; }
    return real_pwrite64(fd, buf, n, off);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { return pwrite64(fd, buf, n, off); }
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    if (fails(fd)) { errno = err; return -1; }
    return real_pwritev64(fd, iov, cnt, off);
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) { return pwritev64(fd, iov, cnt, off); }
