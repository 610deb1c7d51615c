/*
 * tls_driver: N concurrent TLS 1.3 handshakes between in-process endpoint pairs over socketpairs,
 * every SSL in SSL_MODE_ASYNC, driven by one thread and one epoll loop, the way an nginx-style
 * async TLS server drives them. Meant to run with the offload provider loaded (OPENSSL_CONF
 * pointing at offload.cnf), so the handshake digests pause their jobs.
 *
 *   tls_driver [-n pairs] [-r rounds] [-m fd|callback|eager] [-p pool_max] [-a k] [-A drain|free]
 *              [-H] [-b bytes] [-q]
 *   -n  concurrent pairs (default 16); -r  batches run one after the other (default 1)
 *   -m  fd: a parked connection resumes only when one of its async fds is readable
 *          (SSL_get_changed_async_fds, deletions before additions, fds reference-counted);
 *       callback: SSL_set_async_callback, resumed when called back and SSL_get_async_status is OK;
 *       eager: every parked connection is resumed on every loop turn (as s_server does)
 *   -p  ASYNC_init_thread(pool_max, 0): more paused jobs than that give SSL_ERROR_WANT_ASYNC_JOB,
 *       retried after the next loop turn (default 0 = no limit)
 *   -a  every k-th pair is abandoned when its server is paused for the 2nd time (default 0 = none):
 *       drain: both sockets are shut down while the job is paused; the job is then resumed as
 *              usual and the handshake fails; free: SSL_free while the job is paused (OpenSSL leaks
 *              the job, libasyncjob keeps the wait ctx until the thread exits: report only)
 *   -H  hold: parked connections are not resumed until nothing else can progress; then the number
 *       of paused handshakes and the RSS are reported (for RSS per paused handshake)
 *   -b  application bytes sent each way after the handshake (default 1000)
 * Prints key=value lines and exits 0 only if every handshake that was not abandoned completed
 * and exchanged its data, the counts add up and the provider has no fd left open.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/async.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

enum mode { M_FD, M_CALLBACK, M_EAGER };
enum phase { P_HS, P_XFER, P_DONE, P_FAILED };
enum state { S_RUN, S_IO, S_ASYNC, S_JOB, S_END };
enum tag { T_SOCK = 1, T_AFD = 2, T_LOOP = 3 };

struct conn {
    int id;
    int server;
    SSL *ssl;
    int sock;
    struct conn *peer;
    enum phase phase;
    enum state state;
    int abandoned;
    atomic_int cb_ready;
    int nafd;
    int afd[8];          /* async fds this connection has registered */
    int parked_ix;       /* index in the parked list, -1 if not parked */
    unsigned async_seen; /* WANT_ASYNC count of this connection */
    size_t sent, recvd;
    unsigned char rbuf[512];
};

/* fd table for async fds: which connections registered it (reference count = nconn) */
struct afd_ent {
    int nconn;
    struct conn *conns[4];
};

static enum mode mode = M_FD;
static int npairs = 16, rounds = 1, pool_max = 0, abandon_every = 0, abandon_free = 0, hold = 0,
           quiet = 0;
static size_t msg_bytes = 1000;
static int ep, loop_efd;
static struct afd_ent *afds;
static int afds_cap;
static struct conn **parked;
static int nparked;
static struct conn **jobwait;
static int njobwait;
static atomic_ulong app_callbacks;
static unsigned long hs_done, hs_pairs_done, xfer_done, abandoned_pairs, want_async, want_async_hs,
    want_async_job, resumes_fd, resumes_cb, resumes_eager, resumes_abandoned, early, failures,
    hold_paused, stale_fd_events, repeated_changes;
static long rss_base, rss_hold;

static void die(const char *what)
{
    fprintf(stderr, "tls_driver: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static long rss_bytes(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &res) != 2)
        res = 0;
    fclose(f);
    return res * sysconf(_SC_PAGESIZE);
}

static void ep_ctl(int op, int fd, uint32_t events, enum tag tag, uint32_t val)
{
    struct epoll_event ev = { .events = events, .data.u64 = ((uint64_t)tag << 32) | val };
    if (epoll_ctl(ep, op, fd, &ev) != 0)
        die("epoll_ctl");
}

/* ---- async fd bookkeeping ---- */
static void afd_add(struct conn *c, int fd)
{
    if (fd >= afds_cap) {
        int cap = afds_cap ? afds_cap : 1024;
        while (cap <= fd)
            cap *= 2;
        afds = realloc(afds, cap * sizeof(*afds));
        memset(afds + afds_cap, 0, (cap - afds_cap) * sizeof(*afds));
        afds_cap = cap;
    }
    for (int i = 0; i < c->nafd; i++)
        if (c->afd[i] == fd) {
            repeated_changes++; /* reported again: the lists are reset only on resume */
            return;
        }
    struct afd_ent *e = &afds[fd];
    if (e->nconn == 4 || c->nafd == 8)
        die("too many async fds");
    e->conns[e->nconn++] = c;
    c->afd[c->nafd++] = fd;
    if (e->nconn == 1)
        ep_ctl(EPOLL_CTL_ADD, fd, EPOLLIN, T_AFD, fd);
}

/* The fd may have been closed by its owner already (then epoll forgot it). */
static void afd_del(struct conn *c, int fd)
{
    struct afd_ent *e = fd < afds_cap ? &afds[fd] : NULL;
    int i;
    for (i = 0; e != NULL && i < e->nconn && e->conns[i] != c; i++)
        ;
    if (e == NULL || i == e->nconn) {
        /* Already deleted: OpenSSL resets the changed-fd lists when a paused job resumes, not
         * when a job finishes or a new one starts, so a deletion reported when one job finished
         * is reported again by the next job until that one is resumed. */
        repeated_changes++;
        return;
    }
    e->conns[i] = e->conns[--e->nconn];
    for (i = 0; i < c->nafd && c->afd[i] != fd; i++)
        ;
    c->afd[i] = c->afd[--c->nafd];
    if (e->nconn == 0) {
        /* A closed fd has left the epoll set by itself; a number reused since is not ours yet
         * (deletions are processed before additions). */
        struct epoll_event ev = { 0 };
        if (epoll_ctl(ep, EPOLL_CTL_DEL, fd, &ev) != 0 && errno != EBADF && errno != ENOENT)
            die("epoll_ctl DEL");
    }
}

static void track_changed_fds(struct conn *c)
{
    size_t nadd = 0, ndel = 0;
    OSSL_ASYNC_FD add[8], del[8];
    if (!SSL_get_changed_async_fds(c->ssl, NULL, &nadd, NULL, &ndel))
        die("SSL_get_changed_async_fds");
    if (nadd > 8 || ndel > 8)
        die("too many changed fds");
    if (nadd + ndel == 0)
        return;
    if (!SSL_get_changed_async_fds(c->ssl, add, &nadd, del, &ndel))
        die("SSL_get_changed_async_fds");
    for (size_t i = 0; i < ndel; i++)
        afd_del(c, del[i]);
    for (size_t i = 0; i < nadd; i++)
        afd_add(c, add[i]);
}

static void park(struct conn *c)
{
    c->parked_ix = nparked;
    parked[nparked++] = c;
}

static void unpark(struct conn *c)
{
    if (c->parked_ix < 0)
        return;
    struct conn *last = parked[--nparked];
    parked[c->parked_ix] = last;
    last->parked_ix = c->parked_ix;
    c->parked_ix = -1;
}

static void release(struct conn *c)
{
    while (c->nafd > 0)
        afd_del(c, c->afd[c->nafd - 1]);
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->sock);
}

static void end(struct conn *c, enum phase ph)
{
    c->phase = ph;
    c->state = S_END;
    ep_ctl(EPOLL_CTL_MOD, c->sock, 0, T_SOCK, c->id);
}

static void abandon_pair(struct conn *c);

/* Drive one connection as far as it goes. */
static void step(struct conn *c)
{
    c->state = S_RUN;
    for (;;) {
        int r;
        enum phase ph = c->phase;
        if (ph == P_HS) {
            r = SSL_do_handshake(c->ssl);
        } else if (c->sent < msg_bytes) {
            unsigned char buf[512];
            size_t n = msg_bytes - c->sent < sizeof(buf) ? msg_bytes - c->sent : sizeof(buf);
            for (size_t i = 0; i < n; i++)
                buf[i] = (unsigned char)(c->id * 7 + c->server + c->sent + i);
            r = SSL_write(c->ssl, buf, (int)n);
        } else if (c->recvd < msg_bytes) {
            r = SSL_read(c->ssl, c->rbuf, sizeof(c->rbuf));
        } else {
            xfer_done++;
            end(c, P_DONE);
            return;
        }
        track_changed_fds(c);
        if (r > 0) {
            if (ph == P_HS) {
                c->phase = P_XFER;
                hs_done++;
                if (c->peer->phase == P_XFER || c->peer->phase == P_DONE)
                    hs_pairs_done++;
            } else if (c->sent < msg_bytes) {
                c->sent += (size_t)r;
            } else {
                struct conn *p = c->peer;
                for (int i = 0; i < r; i++)
                    if (c->rbuf[i] != (unsigned char)(p->id * 7 + p->server + c->recvd + i))
                        die("data corrupted");
                c->recvd += (size_t)r;
            }
            continue;
        }
        int err = SSL_get_error(c->ssl, r);
        switch (err) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            c->state = S_IO;
            ep_ctl(EPOLL_CTL_MOD, c->sock, err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT, T_SOCK,
                   c->id);
            return;
        case SSL_ERROR_WANT_ASYNC:
            want_async++;
            if (ph == P_HS)
                want_async_hs++;
            c->async_seen++;
            c->state = S_ASYNC;
            if (mode == M_FD && c->nafd == 0)
                die("WANT_ASYNC without an async fd in fd mode: the wake-up would be lost");
            if (mode == M_CALLBACK && c->nafd != 0)
                die("callback mode, yet the provider registered an fd");
            park(c);
            if (abandon_every && c->server && !c->abandoned && c->async_seen == 2
                && (c->id / 2) % abandon_every == 0)
                abandon_pair(c);
            return;
        case SSL_ERROR_WANT_ASYNC_JOB:
            want_async_job++;
            c->state = S_JOB;
            jobwait[njobwait++] = c;
            return;
        default:
            if (!c->abandoned) {
                fprintf(stderr, "conn %d (%s) failed: SSL_get_error=%d\n", c->id,
                        c->server ? "server" : "client", err);
                ERR_print_errors_fp(stderr);
                failures++;
            }
            ERR_clear_error();
            end(c, P_FAILED);
            return;
        }
    }
}

static void resume(struct conn *c)
{
    unpark(c);
    step(c);
}

static void abandon_pair(struct conn *c)
{
    abandoned_pairs++;
    struct conn *pair[2] = { c, c->peer };
    for (int i = 0; i < 2; i++)
        pair[i]->abandoned = 1;
    if (!abandon_free) {
        for (int i = 0; i < 2; i++)
            shutdown(pair[i]->sock, SHUT_RDWR);
        return;
    }
    for (int i = 0; i < 2; i++) {
        struct conn *x = pair[i];
        unpark(x);
        if (x->state == S_JOB) {
            for (int j = 0; j < njobwait; j++)
                if (jobwait[j] == x)
                    jobwait[j] = jobwait[--njobwait];
        }
        x->state = S_END;
        x->phase = P_FAILED;
        release(x);
    }
}

static int app_async_cb(SSL *s, void *arg)
{
    struct conn *c = arg;
    uint64_t one = 1;
    (void)s;
    atomic_store(&c->cb_ready, 1);
    app_callbacks++;
    if (write(loop_efd, &one, sizeof(one)) != sizeof(one))
        abort();
    return 1;
}

/* ---- certificate: EC P-256 key and a self-signed certificate, made at run time ---- */
static void make_cert(EVP_PKEY **pkey, X509 **cert)
{
    *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (*pkey == NULL || x == NULL)
        die("key generation");
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_set_version(x, X509_VERSION_3) || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1)
        || !X509_gmtime_adj(X509_getm_notBefore(x), -3600)
        || !X509_gmtime_adj(X509_getm_notAfter(x), 86400) || !X509_set_pubkey(x, *pkey)
        || !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost",
                                       -1, -1, 0)
        || !X509_set_issuer_name(x, name) || !X509_sign(x, *pkey, EVP_sha256()))
        die("certificate");
    *cert = x;
}

static struct conn *conns;

static void new_pair(SSL_CTX *sctx, SSL_CTX *cctx, int i)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair");
    for (int k = 0; k < 2; k++) {
        struct conn *c = &conns[2 * i + k];
        memset(c, 0, sizeof(*c));
        c->id = 2 * i + k;
        c->server = k == 0;
        c->peer = &conns[2 * i + (1 - k)];
        c->sock = sv[k];
        c->parked_ix = -1;
        c->ssl = SSL_new(c->server ? sctx : cctx);
        if (c->ssl == NULL || !SSL_set_fd(c->ssl, c->sock))
            die("SSL_new");
        SSL_set_mode(c->ssl, SSL_MODE_ASYNC);
        if (c->server)
            SSL_set_accept_state(c->ssl);
        else
            SSL_set_connect_state(c->ssl);
        if (mode == M_CALLBACK
            && (!SSL_set_async_callback(c->ssl, app_async_cb)
                || !SSL_set_async_callback_arg(c->ssl, c)))
            die("SSL_set_async_callback");
        ep_ctl(EPOLL_CTL_ADD, c->sock, 0, T_SOCK, c->id);
    }
}

static void run_batch(SSL_CTX *sctx, SSL_CTX *cctx)
{
    int nconn = 2 * npairs;
    for (int i = 0; i < npairs; i++)
        new_pair(sctx, cctx, i);
    if (hold)
        rss_base = rss_bytes();
    /* clients first, then servers: a fixed order */
    for (int i = 0; i < npairs; i++)
        step(&conns[2 * i + 1]);
    for (int i = 0; i < npairs; i++)
        step(&conns[2 * i]);

    int holding = hold;
    struct epoll_event *evs = malloc(sizeof(*evs) * (size_t)(4 * nconn + 8));
    for (;;) {
        int live = 0;
        for (int i = 0; i < nconn; i++)
            live += conns[i].state != S_END;
        if (live == 0)
            break;
        int timeout = (mode == M_EAGER && nparked > 0) || njobwait > 0 ? 0 : -1;
        int n = epoll_wait(ep, evs, 4 * nconn + 8, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        int socket_work = 0; /* a socket event was handled in this turn */
        for (int k = 0; k < n; k++) {
            enum tag tag = (enum tag)(evs[k].data.u64 >> 32);
            uint32_t val = (uint32_t)evs[k].data.u64;
            if (tag == T_SOCK) {
                struct conn *c = &conns[val];
                if (c->state != S_IO)
                    continue;
                socket_work = 1;
                ep_ctl(EPOLL_CTL_MOD, c->sock, 0, T_SOCK, c->id);
                step(c);
            } else if (tag == T_AFD) {
                if (holding)
                    continue;
                int fd = (int)val;
                if (fd >= afds_cap || afds[fd].nconn == 0) {
                    stale_fd_events++;
                    continue;
                }
                /* resume every connection parked on this fd (copy: resuming changes the table) */
                struct conn *cs[4];
                int nc = afds[fd].nconn;
                memcpy(cs, afds[fd].conns, sizeof(cs));
                for (int j = 0; j < nc; j++) {
                    struct conn *c = cs[j];
                    if (c->state != S_ASYNC)
                        continue;
                    if (mode == M_EAGER)
                        continue; /* resumed below with the others */
                    if (c->abandoned)
                        resumes_abandoned++;
                    resumes_fd++;
                    resume(c);
                }
            } else if (tag == T_LOOP) {
                uint64_t v;
                if (read(loop_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    die("read loop eventfd");
                for (int j = nparked - 1; j >= 0; j--) {
                    if (j >= nparked)
                        continue;
                    struct conn *c = parked[j];
                    if (!atomic_exchange(&c->cb_ready, 0))
                        continue;
                    int st = ASYNC_STATUS_UNSUPPORTED;
                    if (!SSL_get_async_status(c->ssl, &st))
                        die("SSL_get_async_status");
                    if (st != ASYNC_STATUS_OK)
                        early++;
                    resumes_cb++;
                    if (c->abandoned)
                        resumes_abandoned++;
                    resume(c);
                }
            }
        }
        if (holding && !socket_work && njobwait == 0) {
            /* nothing but paused jobs: every one of them is holding its stack now */
            hold_paused = (unsigned long)nparked;
            rss_hold = rss_bytes();
            holding = 0;
        }
        if (mode == M_EAGER && !holding) {
            int cnt = nparked;
            struct conn **snap = malloc(sizeof(*snap) * (size_t)(cnt + 1));
            memcpy(snap, parked, sizeof(*snap) * (size_t)cnt);
            for (int j = 0; j < cnt; j++) {
                struct conn *c = snap[j];
                if (c->state != S_ASYNC)
                    continue;
                int ready = 0;
                for (int f = 0; f < c->nafd; f++) {
                    struct pollfd pfd = { .fd = c->afd[f], .events = POLLIN };
                    ready |= poll(&pfd, 1, 0) == 1;
                }
                if (!ready)
                    early++;
                resumes_eager++;
                if (c->abandoned)
                    resumes_abandoned++;
                resume(c);
            }
            free(snap);
        }
        if (njobwait > 0) {
            int cnt = njobwait;
            struct conn **snap = malloc(sizeof(*snap) * (size_t)cnt);
            memcpy(snap, jobwait, sizeof(*snap) * (size_t)cnt);
            njobwait = 0;
            for (int j = 0; j < cnt; j++)
                step(snap[j]);
            free(snap);
        }
    }
    free(evs);
    for (int i = 0; i < nconn; i++)
        if (conns[i].ssl != NULL)
            release(&conns[i]);
}

static uint64_t prov_counter(OSSL_PROVIDER *prov, const char *key)
{
    uint64_t v = 0;
    OSSL_PARAM q[2] = { OSSL_PARAM_construct_uint64(key, &v), OSSL_PARAM_END };
    if (!OSSL_PROVIDER_get_params(prov, q))
        die("OSSL_PROVIDER_get_params");
    return v;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "n:r:m:p:a:A:Hb:q")) != -1) {
        switch (opt) {
        case 'n': npairs = atoi(optarg); break;
        case 'r': rounds = atoi(optarg); break;
        case 'm':
            mode = strcmp(optarg, "callback") == 0 ? M_CALLBACK
                   : strcmp(optarg, "eager") == 0  ? M_EAGER
                                                   : M_FD;
            if (mode == M_FD && strcmp(optarg, "fd") != 0)
                die("-m fd|callback|eager");
            break;
        case 'p': pool_max = atoi(optarg); break;
        case 'a': abandon_every = atoi(optarg); break;
        case 'A': abandon_free = strcmp(optarg, "free") == 0; break;
        case 'H': hold = 1; break;
        case 'b': msg_bytes = (size_t)atol(optarg); break;
        case 'q': quiet = 1; break;
        default: die("bad option (see the comment at the top of tls_driver.c)");
        }
    }
    if (npairs < 1 || rounds < 1)
        die("-n and -r must be positive");
    if (abandon_free && mode == M_CALLBACK)
        die("-A free needs fd or eager mode (a callback would outlive its SSL)");
    signal(SIGPIPE, SIG_IGN);

    OSSL_PROVIDER *prov = OSSL_PROVIDER_load(NULL, "offload");
    if (prov == NULL)
        die("the offload provider is not loaded (set OPENSSL_CONF to offload.cnf)");
    if (!ASYNC_init_thread((size_t)pool_max, 0))
        die("ASYNC_init_thread");

    EVP_PKEY *pkey;
    X509 *cert;
    make_cert(&pkey, &cert);
    SSL_CTX *sctx = SSL_CTX_new_ex(NULL, NULL, TLS_server_method());
    SSL_CTX *cctx = SSL_CTX_new_ex(NULL, NULL, TLS_client_method());
    if (sctx == NULL || cctx == NULL)
        die("SSL_CTX_new_ex");
    if (!SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION)
        || !SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION)
        || !SSL_CTX_use_certificate(sctx, cert) || !SSL_CTX_use_PrivateKey(sctx, pkey))
        die("SSL_CTX setup");
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);

    ep = epoll_create1(EPOLL_CLOEXEC);
    loop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ep < 0 || loop_efd < 0)
        die("epoll/eventfd");
    ep_ctl(EPOLL_CTL_ADD, loop_efd, EPOLLIN, T_LOOP, 0);
    conns = calloc((size_t)(2 * npairs), sizeof(*conns));
    parked = calloc((size_t)(2 * npairs), sizeof(*parked));
    jobwait = calloc((size_t)(2 * npairs), sizeof(*jobwait));
    uint64_t ops0 = prov_counter(prov, "offload-ops");
    uint64_t pauses0 = prov_counter(prov, "offload-pauses");

    struct timespec t0, t1;
    struct rusage u0, u1;
    getrusage(RUSAGE_THREAD, &u0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < rounds; r++)
        run_batch(sctx, cctx);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_THREAD, &u1);
    double cpu = (double)(u1.ru_utime.tv_sec - u0.ru_utime.tv_sec + u1.ru_stime.tv_sec
                          - u0.ru_stime.tv_sec)
                 + (double)(u1.ru_utime.tv_usec - u0.ru_utime.tv_usec + u1.ru_stime.tv_usec
                            - u0.ru_stime.tv_usec)
                       / 1e6;
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    X509_free(cert);
    EVP_PKEY_free(pkey);
    close(ep);
    close(loop_efd);
    free(conns);
    free(parked);
    free(jobwait);
    free(afds);

    struct {
        const char *key;
        uint64_t v;
    } pc[] = {
        { "ops", prov_counter(prov, "offload-ops") },
        { "async_ops", prov_counter(prov, "offload-async-ops") },
        { "pauses", prov_counter(prov, "offload-pauses") },
        { "spurious", prov_counter(prov, "offload-spurious-resumes") },
        { "nojob", prov_counter(prov, "offload-nojob-ops") },
        { "blocked", prov_counter(prov, "offload-blocked-ops") },
        { "callbacks", prov_counter(prov, "offload-callbacks") },
        { "fds_created", prov_counter(prov, "offload-fds-created") },
        { "fds_open", prov_counter(prov, "offload-fds-open") },
    };
    enum { OPS, ASYNC_OPS, PAUSES, SPURIOUS, NOJOB, BLOCKED, CALLBACKS, FDS_CREATED, FDS_OPEN };
    unsigned long pairs_total = (unsigned long)npairs * (unsigned long)rounds;
    unsigned long expected_pairs = pairs_total - abandoned_pairs;
    unsigned long ok_pairs = xfer_done / 2;

    printf("mode=%s pairs=%lu rounds=%d pool_max=%d abandon_every=%d%s\n",
           mode == M_FD ? "fd" : mode == M_CALLBACK ? "callback" : "eager",
           (unsigned long)npairs, rounds, pool_max, abandon_every, abandon_free ? "(free)" : "");
    printf("handshakes=%lu pairs_done=%lu abandoned=%lu want_async=%lu want_async_hs=%lu "
           "want_async_job=%lu\n",
           hs_pairs_done, ok_pairs, abandoned_pairs, want_async, want_async_hs, want_async_job);
    printf("resumes_fd=%lu resumes_callback=%lu resumes_eager=%lu resumes_abandoned=%lu early=%lu "
           "app_callbacks=%lu stale_fd_events=%lu repeated_fd_changes=%lu\n",
           resumes_fd, resumes_cb, resumes_eager, resumes_abandoned, early,
           (unsigned long)app_callbacks, stale_fd_events, repeated_changes);
    printf("provider:");
    for (size_t i = 0; i < sizeof(pc) / sizeof(pc[0]); i++)
        printf(" %s=%llu", pc[i].key, (unsigned long long)pc[i].v);
    printf("\n");
    if (hs_pairs_done > 0)
        printf("pauses_per_handshake=%.2f ops_per_pair=%.2f\n",
               (double)want_async_hs / (double)hs_pairs_done,
               (double)(pc[OPS].v - ops0) / (double)pairs_total);
    if (!quiet)
        printf("seconds=%.3f handshakes_per_s=%.0f loop_thread_cpu_us_per_handshake=%.0f\n", secs,
               (double)hs_pairs_done / secs, hs_pairs_done ? cpu * 1e6 / (double)hs_pairs_done : 0);
    if (hold)
        printf("hold: paused=%lu rss_base=%ld rss_hold=%ld rss_per_paused=%ld\n", hold_paused,
               rss_base, rss_hold,
               hold_paused ? (rss_hold - rss_base) / (long)hold_paused : 0);

    /* the checks */
    int bad = 0;
#define CHECK(cond, ...)                                                                        \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            printf("CHECK FAILED: " __VA_ARGS__);                                               \
            printf("\n");                                                                       \
            bad = 1;                                                                            \
        }                                                                                       \
    } while (0)
    CHECK(failures == 0, "%lu connections failed", failures);
    CHECK(ok_pairs == expected_pairs && xfer_done % 2 == 0,
          "%lu of %lu pairs completed handshake and data", ok_pairs, expected_pairs);
    CHECK(hs_pairs_done >= expected_pairs, "handshakes %lu < %lu", hs_pairs_done, expected_pairs);
    CHECK(pc[PAUSES].v - pauses0 == want_async, "provider pauses %llu != WANT_ASYNC %lu",
          (unsigned long long)(pc[PAUSES].v - pauses0), want_async);
    CHECK(pc[PAUSES].v == pc[ASYNC_OPS].v + pc[SPURIOUS].v, "pauses != async ops + spurious");
    CHECK(pc[OPS].v == pc[ASYNC_OPS].v + pc[NOJOB].v + pc[BLOCKED].v,
          "ops != async + nojob + blocked");
    CHECK(want_async > 0, "nothing paused: is the provider selected?");
    if (!abandon_free) {
        CHECK(resumes_fd + resumes_cb + resumes_eager == want_async,
              "resumes %lu != WANT_ASYNC %lu", resumes_fd + resumes_cb + resumes_eager, want_async);
        CHECK(pc[FDS_OPEN].v == 0, "%llu provider fds left open",
              (unsigned long long)pc[FDS_OPEN].v);
    }
    if (mode == M_CALLBACK) {
        CHECK(pc[FDS_CREATED].v == 0, "callback mode created fds");
        CHECK(pc[CALLBACKS].v == app_callbacks, "provider callbacks != app callbacks");
        CHECK(resumes_cb == pc[CALLBACKS].v, "callback resumes != callbacks");
    } else {
        CHECK(pc[CALLBACKS].v == 0, "callbacks without a callback");
        CHECK(pc[FDS_CREATED].v > 0, "fd mode without fds");
    }
    if (mode == M_FD)
        CHECK(pc[SPURIOUS].v == 0, "resumed only on readable fds, yet %llu spurious resumes",
              (unsigned long long)pc[SPURIOUS].v);
    if (!abandon_free)
        CHECK(stale_fd_events == 0, "events on fds no connection had");

    OSSL_PROVIDER_unload(prov);
    ASYNC_cleanup_thread();
    printf("%s\n", bad ? "RESULT: FAILED" : "RESULT: OK");
    return bad;
}
