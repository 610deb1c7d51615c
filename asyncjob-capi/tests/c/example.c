/*
 * Our own rewrite of the scenario in ASYNC_start_job(3)'s EXAMPLES section: a job registers the read
 * end of a pipe as its wait fd, makes it readable, pauses, and the caller select()s on the fd before
 * resuming. The eight lines it prints must match the man page's "expected output" exactly, both when
 * linked against libasyncjob and against the system libcrypto.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <unistd.h>

#ifdef TEST_OPENSSL
#include <openssl/async.h>
#else
#include "asyncjob.h"
#endif

static int wait_key; /* only its address matters: it identifies our fd in the wait ctx */

struct pipe_pair {
    int rd;
    int wr;
};

static void release_pipe(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd, void *data)
{
    struct pipe_pair *p = data;
    (void)ctx;
    (void)key;
    close(fd);
    close(p->wr);
    free(p);
}

static int worker(void *arg)
{
    const char *greeting = arg;
    ASYNC_JOB *self = ASYNC_get_current_job();
    struct pipe_pair *p;
    int fds[2];
    char byte = 'X';

    if (self == NULL) {
        printf("Not executing within a job - should not happen\n");
        return 0;
    }
    printf("Executing within a job\n");
    printf("Passed in message is: %s\n", greeting);

    if (pipe(fds) != 0 || (p = malloc(sizeof(*p))) == NULL) {
        printf("Failed to set up the wake-up pipe\n");
        return 0;
    }
    p->rd = fds[0];
    p->wr = fds[1];
    ASYNC_WAIT_CTX_set_wait_fd(ASYNC_get_wait_ctx(self), &wait_key, p->rd, p, release_pipe);

    /* Stand-in for an external event: the job is "ready" as soon as it has paused. */
    if (write(p->wr, &byte, 1) != 1)
        return 0;
    ASYNC_pause_job();
    if (read(p->rd, &byte, 1) != 1)
        return 0;
    printf("Resumed the job after a pause\n");
    return 1;
}

int main(void)
{
    char greeting[13] = "Hello world!";
    ASYNC_JOB *job = NULL;
    ASYNC_WAIT_CTX *wctx;
    int result = 0;
    int done = 0;

    printf("Starting...\n");
    wctx = ASYNC_WAIT_CTX_new();
    if (wctx == NULL) {
        printf("Failed to create ASYNC_WAIT_CTX\n");
        abort();
    }
    while (!done) {
        OSSL_ASYNC_FD fd;
        size_t n = 0;
        fd_set readable;

        switch (ASYNC_start_job(&job, wctx, &result, worker, greeting, sizeof(greeting))) {
        case ASYNC_PAUSE:
            printf("Job was paused\n");
            break;
        case ASYNC_FINISH:
            printf("Job finished with return value %d\n", result);
            done = 1;
            continue;
        default:
            printf("An error occurred\n");
            done = 1;
            continue;
        }
        printf("Waiting for the job to be woken up\n");
        if (!ASYNC_WAIT_CTX_get_all_fds(wctx, NULL, &n) || n != 1) {
            printf("Unexpected number of fds\n");
            abort();
        }
        ASYNC_WAIT_CTX_get_all_fds(wctx, &fd, &n);
        FD_ZERO(&readable);
        FD_SET(fd, &readable);
        select(fd + 1, &readable, NULL, NULL, NULL);
    }
    ASYNC_WAIT_CTX_free(wctx);
    printf("Finishing\n");
    return 0;
}
