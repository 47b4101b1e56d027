/* The process-wide stop request: a flag and a self-pipe that wakes poll(). */
#include "replicator/stop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop_flag;
static atomic_int pipe_rd = -1;
static atomic_int pipe_wr = -1;
static pthread_once_t pipe_once = PTHREAD_ONCE_INIT;

static void make_pipe(void)
{
    int fds[2];

    /* Without a pipe stops are still seen, only at the next timeout. */
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
        return;
    atomic_store(&pipe_rd, fds[0]);
    atomic_store(&pipe_wr, fds[1]);
    if (atomic_load(&stop_flag))
        zetl_stop_request();
}

void zetl_stop_init(void)
{
    pthread_once(&pipe_once, make_pipe);
}

void zetl_stop_request(void)
{
    int fd = atomic_load(&pipe_wr);
    int saved = errno; /* a signal handler must leave errno as it found it */

    atomic_store(&stop_flag, 1);
    if (fd >= 0) {
        ssize_t n = write(fd, "", 1);
        (void)n; /* a full pipe is readable already */
    }
    errno = saved;
}

bool zetl_stop_requested(void)
{
    return atomic_load(&stop_flag) != 0;
}

int zetl_stop_fd(void)
{
    return atomic_load(&pipe_rd);
}

void zetl_stop_sleep(int64_t ms)
{
    int fd = zetl_stop_fd();

    if (fd >= 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (!zetl_stop_requested() && ms > 0)
            poll(&pfd, 1, ms > INT32_MAX ? INT32_MAX : (int)ms);
        return;
    }
    while (ms > 0 && !zetl_stop_requested()) {
        int64_t step = ms > 100 ? 100 : ms;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

void zetl_stop_reset(void)
{
    int fd = zetl_stop_fd();
    char buf[64];

    atomic_store(&stop_flag, 0);
    if (fd >= 0)
        while (read(fd, buf, sizeof(buf)) > 0)
            ;
}
