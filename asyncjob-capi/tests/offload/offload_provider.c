/*
 * offload: an OpenSSL 3 provider that simulates an asynchronous digest accelerator.
 *
 * It offers SHA2-256 and SHA2-384 under the property "provider=offload". Every update and final
 * is an operation sent to a worker thread (the "accelerator"); while the operation is in flight
 * the provider pauses the current ASYNC job and, when resumed, pauses again until the completion
 * has been seen (spurious resumes are counted). The digest itself is computed with libcrypto's
 * default implementation, fetched with "provider=default" from a library context of our own, on
 * the job side when the operation is submitted; the worker only provides the completion (after
 * the configured latency) and its signal, so it never touches caller memory.
 *
 * Completion signals:
 *   - fd mode "ctx" (default): one eventfd (a pipe without eventfd) per wait context, registered
 *     under the provider's key and closed by its cleanup callback;
 *   - fd mode "op": a fresh fd per operation, cleared with ASYNC_WAIT_CTX_clear_fd when the
 *     operation completes (exercises the changed-fds lists);
 *   - callback mode, chosen per operation when the wait context has a callback: the worker sets
 *     ASYNC_STATUS_OK and calls it; no fd is created (status is EAGAIN while in flight).
 * Outside a job, without a wait context, or with pausing blocked, the provider waits
 * synchronously. Every k-th operation blocks pausing itself (ASYNC_block_pause) to exercise that.
 *
 * Settings (provider config section key / environment variable, the environment wins):
 *   latency_us  / OFFLOAD_LATENCY_US   accelerator latency; 0 = the operation completes (and is
 *                                      signalled) before the job pauses, which still pauses once:
 *                                      with 0 all counts are deterministic
 *   fd_mode     / OFFLOAD_FD_MODE      "ctx" or "op"
 *   block_every / OFFLOAD_BLOCK_EVERY  k > 0: every k-th operation runs with pausing blocked
 *   stats       / OFFLOAD_STATS        1: print the counters to stderr at teardown
 * Counters are provider parameters (uint64): offload-ops, offload-async-ops, offload-pauses,
 * offload-spurious-resumes, offload-nojob-ops, offload-blocked-ops, offload-callbacks,
 * offload-fds-created, offload-fds-open.
 *
 * Reference counting: the completion fd belongs to a `struct wfd` with one reference for the wait
 * context registration (dropped by the cleanup callback, or by the job after clear_fd) and one
 * per operation in flight (dropped by the job once it has seen the completion), so the worker
 * never writes to a closed fd, even when the wait context is freed while the job is paused. An operation is a heap object shared by the job and the worker, with its own
 * mutex: the worker signals (fd write or callback) and sets `done` under that mutex, and the job
 * reads the fd only once it saw `done`, so a signal is consumed by exactly the operation that
 * produced it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#ifndef OFFLOAD_USE_PIPE
#include <sys/eventfd.h>
#define HAVE_EVENTFD 1
#endif
#endif

#include <openssl/async.h>
#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

/* ---- counters (process-wide: wait-context cleanups may outlive a provider instance) ---- */
static _Atomic uint64_t c_ops, c_async_ops, c_pauses, c_spurious, c_nojob, c_blocked, c_callbacks,
    c_fds_created;
static _Atomic int64_t c_fds_open;

/* The key under which our fd is registered in a wait context. */
static const char offload_key[] = "offload";

/* ---- completion fd, reference counted ---- */
struct wfd {
    _Atomic int refs;
    int rfd, wfd; /* equal for an eventfd */
};

static struct wfd *wfd_new(void)
{
    struct wfd *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
#ifdef HAVE_EVENTFD
    w->rfd = w->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->rfd < 0) {
        free(w);
        return NULL;
    }
#else
    int p[2];
    if (pipe(p) != 0) {
        free(w);
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
    }
    w->rfd = p[0];
    w->wfd = p[1];
#endif
    atomic_init(&w->refs, 1);
    c_fds_created++;
    c_fds_open++;
    return w;
}

static void wfd_get(struct wfd *w) { atomic_fetch_add(&w->refs, 1); }

static void wfd_put(struct wfd *w)
{
    if (atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    close(w->rfd);
    if (w->wfd != w->rfd)
        close(w->wfd);
    c_fds_open--;
    free(w);
}

static void wfd_signal(struct wfd *w)
{
#ifdef HAVE_EVENTFD
    uint64_t one = 1;
#else
    char one = 1;
#endif
    while (write(w->wfd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

static void wfd_consume(struct wfd *w)
{
#ifdef HAVE_EVENTFD
    uint64_t v;
#else
    char v;
#endif
    while (read(w->rfd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
}

/* Cleanup callback registered with the fd: drops the wait context's reference. */
static void wfd_cleanup(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd, void *custom)
{
    (void)ctx;
    (void)key;
    (void)fd;
    wfd_put(custom);
}

/* ---- operations and the worker ---- */
struct op {
    struct op *next;
    _Atomic int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    struct timespec deadline;
    struct wfd *w;         /* fd mode: the fd to signal; the job holds a reference for the
                            * operation and drops it once it has seen `done` (the worker only
                            * writes before setting `done`, under `mu`) */
    ASYNC_callback_fn cb;  /* callback mode */
    void *cbarg;
    ASYNC_WAIT_CTX *wctx;  /* callback mode: where to set the status */
};

static struct op *op_new(void)
{
    struct op *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    atomic_init(&o->refs, 2); /* the job and the worker */
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    return o;
}

static void op_put(struct op *o)
{
    if (atomic_fetch_sub(&o->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o);
}

typedef struct {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *own;
    EVP_MD *sha256, *sha384;
    long latency_us;
    int fd_per_op;
    unsigned long block_every;
    int stats;
    pthread_t worker;
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    struct op *qhead, *qtail;
    int stop;
    _Atomic uint64_t seq;
} PROV;

static void *worker_main(void *arg)
{
    PROV *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->qmu);
        while (p->qhead == NULL && !p->stop)
            pthread_cond_wait(&p->qcv, &p->qmu);
        struct op *o = p->qhead;
        if (o == NULL) {
            pthread_mutex_unlock(&p->qmu);
            return NULL;
        }
        p->qhead = o->next;
        if (p->qhead == NULL)
            p->qtail = NULL;
        pthread_mutex_unlock(&p->qmu);

        if (p->latency_us > 0)
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &o->deadline, NULL) == EINTR)
                ;
        pthread_mutex_lock(&o->mu);
        if (o->cb != NULL) {
            ASYNC_WAIT_CTX_set_status(o->wctx, ASYNC_STATUS_OK);
            c_callbacks++;
            o->cb(o->cbarg);
        } else if (o->w != NULL) {
            wfd_signal(o->w);
        }
        o->done = 1;
        pthread_cond_broadcast(&o->cv);
        pthread_mutex_unlock(&o->mu);
        op_put(o);
    }
}

static void submit(PROV *p, struct op *o)
{
    clock_gettime(CLOCK_MONOTONIC, &o->deadline);
    o->deadline.tv_nsec += p->latency_us * 1000;
    while (o->deadline.tv_nsec >= 1000000000L) {
        o->deadline.tv_nsec -= 1000000000L;
        o->deadline.tv_sec++;
    }
    pthread_mutex_lock(&p->qmu);
    if (p->qtail != NULL)
        p->qtail->next = o;
    else
        p->qhead = o;
    p->qtail = o;
    pthread_cond_signal(&p->qcv);
    pthread_mutex_unlock(&p->qmu);
}

static void wait_done(struct op *o)
{
    pthread_mutex_lock(&o->mu);
    while (!o->done)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
}

/* One accelerator operation. Returns 1 on success. */
static int offload(PROV *p)
{
    uint64_t n = ++p->seq;
    c_ops++;
    ASYNC_JOB *job = ASYNC_get_current_job();
    ASYNC_WAIT_CTX *wctx = job != NULL ? ASYNC_get_wait_ctx(job) : NULL;
    struct op *o = op_new();
    if (o == NULL)
        return 0;

    if (job == NULL || wctx == NULL) {
        c_nojob++;
        submit(p, o);
        wait_done(o);
        op_put(o);
        return 1;
    }
    if (p->block_every != 0 && n % p->block_every == 0) {
        c_blocked++;
        ASYNC_block_pause();
        submit(p, o);
        /* pausing is blocked: this must return at once without pausing */
        if (!ASYNC_pause_job()) {
            ASYNC_unblock_pause();
            wait_done(o);
            op_put(o);
            return 0;
        }
        wait_done(o);
        ASYNC_unblock_pause();
        op_put(o);
        return 1;
    }

    ASYNC_callback_fn cb = NULL;
    void *cbarg = NULL;
    struct wfd *w = NULL;
    if (ASYNC_WAIT_CTX_get_callback(wctx, &cb, &cbarg) && cb != NULL) {
        o->cb = cb;
        o->cbarg = cbarg;
        o->wctx = wctx;
        ASYNC_WAIT_CTX_set_status(wctx, ASYNC_STATUS_EAGAIN);
    } else {
        OSSL_ASYNC_FD fd;
        void *custom = NULL;
        if (!p->fd_per_op && ASYNC_WAIT_CTX_get_fd(wctx, offload_key, &fd, &custom)) {
            w = custom;
        } else {
            w = wfd_new();
            if (w == NULL || !ASYNC_WAIT_CTX_set_wait_fd(wctx, offload_key, w->rfd, w, wfd_cleanup)) {
                if (w != NULL)
                    wfd_put(w);
                op_put(o);
                op_put(o);
                return 0;
            }
        }
        wfd_get(w);
        o->w = w;
    }
    c_async_ops++;
    submit(p, o);
    if (p->latency_us == 0)
        wait_done(o); /* "complete at once": signalled before we pause */
    for (;;) {
        c_pauses++;
        if (!ASYNC_pause_job()) {
            wait_done(o);
            break;
        }
        pthread_mutex_lock(&o->mu);
        int done = o->done;
        if (done && o->w != NULL)
            wfd_consume(o->w);
        pthread_mutex_unlock(&o->mu);
        if (done)
            break;
        c_spurious++;
    }
    if (w != NULL) {
        wfd_put(w); /* the operation's reference: the worker is done with the fd */
        if (p->fd_per_op) {
            /* clear_fd does not call the cleanup: drop the registration's reference ourselves */
            ASYNC_WAIT_CTX_clear_fd(wctx, offload_key);
            wfd_put(w);
        }
    }
    op_put(o);
    return 1;
}

/* ---- digests ---- */
typedef struct {
    PROV *p;
    const EVP_MD *md;
    EVP_MD_CTX *mc;
} DCTX;

static DCTX *dctx_new(PROV *p, const EVP_MD *md)
{
    DCTX *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->p = p;
    d->md = md;
    d->mc = EVP_MD_CTX_new();
    if (d->mc == NULL) {
        free(d);
        return NULL;
    }
    return d;
}

static void *sha256_newctx(void *provctx)
{
    PROV *p = provctx;
    return dctx_new(p, p->sha256);
}

static void *sha384_newctx(void *provctx)
{
    PROV *p = provctx;
    return dctx_new(p, p->sha384);
}

static void dctx_free(void *vd)
{
    DCTX *d = vd;
    if (d == NULL)
        return;
    EVP_MD_CTX_free(d->mc);
    free(d);
}

static void *dctx_dup(void *vd)
{
    DCTX *d = vd, *n = dctx_new(d->p, d->md);
    if (n == NULL)
        return NULL;
    if (!EVP_MD_CTX_copy_ex(n->mc, d->mc)) {
        dctx_free(n);
        return NULL;
    }
    return n;
}

static int dctx_init(void *vd, const OSSL_PARAM params[])
{
    DCTX *d = vd;
    (void)params;
    return EVP_DigestInit_ex(d->mc, d->md, NULL);
}

static int dctx_update(void *vd, const unsigned char *in, size_t inl)
{
    DCTX *d = vd;
    if (!EVP_DigestUpdate(d->mc, in, inl))
        return 0;
    return offload(d->p);
}

static int dctx_final(void *vd, unsigned char *out, size_t *outl, size_t outsz)
{
    DCTX *d = vd;
    unsigned int len = 0;
    if (outsz < (size_t)EVP_MD_get_size(d->md))
        return 0;
    if (!EVP_DigestFinal_ex(d->mc, out, &len))
        return 0;
    *outl = len;
    return offload(d->p);
}

static int md_get_params(OSSL_PARAM params[], size_t blocksize, size_t size)
{
    OSSL_PARAM *q;
    if ((q = OSSL_PARAM_locate(params, OSSL_DIGEST_PARAM_BLOCK_SIZE)) != NULL
        && !OSSL_PARAM_set_size_t(q, blocksize))
        return 0;
    if ((q = OSSL_PARAM_locate(params, OSSL_DIGEST_PARAM_SIZE)) != NULL
        && !OSSL_PARAM_set_size_t(q, size))
        return 0;
    if ((q = OSSL_PARAM_locate(params, OSSL_DIGEST_PARAM_XOF)) != NULL && !OSSL_PARAM_set_int(q, 0))
        return 0;
    if ((q = OSSL_PARAM_locate(params, OSSL_DIGEST_PARAM_ALGID_ABSENT)) != NULL
        && !OSSL_PARAM_set_int(q, 1))
        return 0;
    return 1;
}

static int sha256_get_params(OSSL_PARAM params[]) { return md_get_params(params, 64, 32); }
static int sha384_get_params(OSSL_PARAM params[]) { return md_get_params(params, 128, 48); }

static const OSSL_PARAM md_gettable[] = {
    OSSL_PARAM_size_t(OSSL_DIGEST_PARAM_BLOCK_SIZE, NULL),
    OSSL_PARAM_size_t(OSSL_DIGEST_PARAM_SIZE, NULL),
    OSSL_PARAM_int(OSSL_DIGEST_PARAM_XOF, NULL),
    OSSL_PARAM_int(OSSL_DIGEST_PARAM_ALGID_ABSENT, NULL),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *md_gettable_params(void *provctx)
{
    (void)provctx;
    return md_gettable;
}

#define DIGEST_FUNCS(name)                                                                      \
    static const OSSL_DISPATCH name##_functions[] = {                                           \
        { OSSL_FUNC_DIGEST_NEWCTX, (void (*)(void))name##_newctx },                             \
        { OSSL_FUNC_DIGEST_INIT, (void (*)(void))dctx_init },                                   \
        { OSSL_FUNC_DIGEST_UPDATE, (void (*)(void))dctx_update },                               \
        { OSSL_FUNC_DIGEST_FINAL, (void (*)(void))dctx_final },                                 \
        { OSSL_FUNC_DIGEST_FREECTX, (void (*)(void))dctx_free },                                \
        { OSSL_FUNC_DIGEST_DUPCTX, (void (*)(void))dctx_dup },                                  \
        { OSSL_FUNC_DIGEST_GET_PARAMS, (void (*)(void))name##_get_params },                     \
        { OSSL_FUNC_DIGEST_GETTABLE_PARAMS, (void (*)(void))md_gettable_params },               \
        { 0, NULL },                                                                            \
    };
DIGEST_FUNCS(sha256)
DIGEST_FUNCS(sha384)

static const OSSL_ALGORITHM offload_digests[] = {
    { "SHA2-256:SHA-256:SHA256:2.16.840.1.101.3.4.2.1", "provider=offload", sha256_functions,
      "SHA2-256 through the simulated accelerator" },
    { "SHA2-384:SHA-384:SHA384:2.16.840.1.101.3.4.2.2", "provider=offload", sha384_functions,
      "SHA2-384 through the simulated accelerator" },
    { NULL, NULL, NULL, NULL },
};

/* ---- the provider ---- */
static const OSSL_ALGORITHM *prov_query(void *provctx, int operation_id, int *no_cache)
{
    (void)provctx;
    *no_cache = 0;
    return operation_id == OSSL_OP_DIGEST ? offload_digests : NULL;
}

static const OSSL_PARAM prov_gettable[] = {
    OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0),
    OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_VERSION, NULL, 0),
    OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_BUILDINFO, NULL, 0),
    OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
    OSSL_PARAM_uint64("offload-ops", NULL),
    OSSL_PARAM_uint64("offload-async-ops", NULL),
    OSSL_PARAM_uint64("offload-pauses", NULL),
    OSSL_PARAM_uint64("offload-spurious-resumes", NULL),
    OSSL_PARAM_uint64("offload-nojob-ops", NULL),
    OSSL_PARAM_uint64("offload-blocked-ops", NULL),
    OSSL_PARAM_uint64("offload-callbacks", NULL),
    OSSL_PARAM_uint64("offload-fds-created", NULL),
    OSSL_PARAM_uint64("offload-fds-open", NULL),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *prov_gettable_params(void *provctx)
{
    (void)provctx;
    return prov_gettable;
}

static int prov_get_params(void *provctx, OSSL_PARAM params[])
{
    (void)provctx;
    OSSL_PARAM *q;
    if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(q, "asyncjob offload test provider"))
        return 0;
    if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(q, "1.0"))
        return 0;
    if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(q, "asyncjob-capi/tests/offload"))
        return 0;
    if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL && !OSSL_PARAM_set_int(q, 1))
        return 0;
    const struct {
        const char *key;
        uint64_t v;
    } c[] = {
        { "offload-ops", c_ops },
        { "offload-async-ops", c_async_ops },
        { "offload-pauses", c_pauses },
        { "offload-spurious-resumes", c_spurious },
        { "offload-nojob-ops", c_nojob },
        { "offload-blocked-ops", c_blocked },
        { "offload-callbacks", c_callbacks },
        { "offload-fds-created", c_fds_created },
        { "offload-fds-open", (uint64_t)c_fds_open },
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        if ((q = OSSL_PARAM_locate(params, c[i].key)) != NULL && !OSSL_PARAM_set_uint64(q, c[i].v))
            return 0;
    return 1;
}

static void prov_teardown(void *provctx)
{
    PROV *p = provctx;
    pthread_mutex_lock(&p->qmu);
    p->stop = 1;
    pthread_cond_signal(&p->qcv);
    pthread_mutex_unlock(&p->qmu);
    pthread_join(p->worker, NULL);
    if (p->stats)
        fprintf(stderr,
                "offload: ops=%llu async_ops=%llu pauses=%llu spurious=%llu nojob=%llu blocked=%llu "
                "callbacks=%llu fds_created=%llu fds_open=%lld\n",
                (unsigned long long)c_ops, (unsigned long long)c_async_ops,
                (unsigned long long)c_pauses, (unsigned long long)c_spurious,
                (unsigned long long)c_nojob, (unsigned long long)c_blocked,
                (unsigned long long)c_callbacks, (unsigned long long)c_fds_created,
                (long long)c_fds_open);
    EVP_MD_free(p->sha256);
    EVP_MD_free(p->sha384);
    OSSL_LIB_CTX_free(p->own);
    pthread_mutex_destroy(&p->qmu);
    pthread_cond_destroy(&p->qcv);
    free(p);
}

static const OSSL_DISPATCH prov_functions[] = {
    { OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))prov_teardown },
    { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))prov_query },
    { OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))prov_gettable_params },
    { OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))prov_get_params },
    { 0, NULL },
};

/* A setting: the environment variable wins over the config key. */
static const char *setting(OSSL_FUNC_core_get_params_fn *get, const OSSL_CORE_HANDLE *h,
                           const char *key, const char *env, const char *dflt)
{
    const char *v = getenv(env);
    if (v != NULL && *v != '\0')
        return v;
    if (get != NULL) {
        char *cv = NULL;
        OSSL_PARAM q[2] = { OSSL_PARAM_construct_utf8_ptr(key, &cv, 0), OSSL_PARAM_END };
        if (get(h, q) && cv != NULL)
            return cv;
    }
    return dflt;
}

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
    OSSL_FUNC_core_get_params_fn *get = NULL;
    for (; in->function_id != 0; in++)
        if (in->function_id == OSSL_FUNC_CORE_GET_PARAMS)
            get = OSSL_FUNC_core_get_params(in);

    PROV *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return 0;
    p->handle = handle;
    p->latency_us = strtol(setting(get, handle, "latency_us", "OFFLOAD_LATENCY_US", "0"), NULL, 10);
    p->fd_per_op = strcmp(setting(get, handle, "fd_mode", "OFFLOAD_FD_MODE", "ctx"), "op") == 0;
    p->block_every = strtoul(setting(get, handle, "block_every", "OFFLOAD_BLOCK_EVERY", "0"), NULL, 10);
    p->stats = atoi(setting(get, handle, "stats", "OFFLOAD_STATS", "0"));
    if (p->latency_us < 0)
        p->latency_us = 0;

    p->own = OSSL_LIB_CTX_new();
    if (p->own != NULL) {
        p->sha256 = EVP_MD_fetch(p->own, "SHA2-256", "provider=default");
        p->sha384 = EVP_MD_fetch(p->own, "SHA2-384", "provider=default");
    }
    if (p->sha256 == NULL || p->sha384 == NULL)
        goto err;
    pthread_mutex_init(&p->qmu, NULL);
    pthread_cond_init(&p->qcv, NULL);
    if (pthread_create(&p->worker, NULL, worker_main, p) != 0) {
        pthread_mutex_destroy(&p->qmu);
        pthread_cond_destroy(&p->qcv);
        goto err;
    }
    *out = prov_functions;
    *provctx = p;
    return 1;
err:
    EVP_MD_free(p->sha256);
    EVP_MD_free(p->sha384);
    OSSL_LIB_CTX_free(p->own);
    free(p);
    return 0;
}
