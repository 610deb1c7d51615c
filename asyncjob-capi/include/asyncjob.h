/*
 * asyncjob.h: the C interface of libasyncjob, a drop-in replacement for OpenSSL's ASYNC job API.
 *
 * Every declaration here has the same name, signature and constant values as OpenSSL 3.x's
 * <openssl/async.h> (plus the 3.2 stack-allocator pair), so a program can be compiled against either
 * header and linked against either library. Including both headers, in any order, is fine: the shared
 * typedefs and macros are only declared once.
 *
 * Behaviour follows OpenSSL wherever OpenSSL is well defined. Where OpenSSL crashes or corrupts its
 * state (nested starts, stale or foreign job handles, NULL contexts, ...) libasyncjob returns an error
 * instead; see the deviations table in the project README.
 *
 * Windows: as with OpenSSL, include <windows.h> before this header to get OSSL_ASYNC_FD (a HANDLE) and
 * the ASYNC_WAIT_CTX_* declarations.
 */
#ifndef ASYNCJOB_H
#define ASYNCJOB_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Everything <openssl/async.h> itself declares; skipped when that header came first. */
#ifndef OPENSSL_ASYNC_H
#define OPENSSL_ASYNC_H

#if defined(_WIN32)
#if defined(BASETYPES) || defined(_WINDEF_H)
#define OSSL_ASYNC_FD HANDLE
#define OSSL_BAD_ASYNC_FD INVALID_HANDLE_VALUE
#endif
#else
#define OSSL_ASYNC_FD int
#define OSSL_BAD_ASYNC_FD -1
#endif

/* Opaque handles; the struct tags are OpenSSL's so pointers are interchangeable. */
typedef struct async_job_st ASYNC_JOB;
typedef struct async_wait_ctx_st ASYNC_WAIT_CTX;
typedef int (*ASYNC_callback_fn)(void *arg);

/* ASYNC_start_job() results */
#define ASYNC_ERR 0
#define ASYNC_NO_JOBS 1
#define ASYNC_PAUSE 2
#define ASYNC_FINISH 3

/* Reason codes of the errors queued under ERR_LIB_ASYNC (51) when libcrypto is loaded, as in
 * <openssl/asyncerr.h>. */
#ifndef ASYNC_R_INVALID_POOL_SIZE
#define ASYNC_R_FAILED_TO_SET_POOL 101
#define ASYNC_R_FAILED_TO_SWAP_CONTEXT 102
#define ASYNC_R_INVALID_POOL_SIZE 103
#define ASYNC_R_INIT_FAILED 105
#endif

/* ASYNC_WAIT_CTX_get_status() values */
#define ASYNC_STATUS_UNSUPPORTED 0
#define ASYNC_STATUS_ERR 1
#define ASYNC_STATUS_OK 2
#define ASYNC_STATUS_EAGAIN 3

int ASYNC_init_thread(size_t max_size, size_t init_size);
void ASYNC_cleanup_thread(void);

#ifdef OSSL_ASYNC_FD
ASYNC_WAIT_CTX *ASYNC_WAIT_CTX_new(void);
void ASYNC_WAIT_CTX_free(ASYNC_WAIT_CTX *ctx);
int ASYNC_WAIT_CTX_set_wait_fd(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd,
                               void *custom_data,
                               void (*cleanup)(ASYNC_WAIT_CTX *, const void *, OSSL_ASYNC_FD,
                                               void *));
int ASYNC_WAIT_CTX_get_fd(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD *fd,
                          void **custom_data);
int ASYNC_WAIT_CTX_get_all_fds(ASYNC_WAIT_CTX *ctx, OSSL_ASYNC_FD *fd, size_t *numfds);
int ASYNC_WAIT_CTX_get_callback(ASYNC_WAIT_CTX *ctx, ASYNC_callback_fn *callback,
                                void **callback_arg);
int ASYNC_WAIT_CTX_set_callback(ASYNC_WAIT_CTX *ctx, ASYNC_callback_fn callback,
                                void *callback_arg);
int ASYNC_WAIT_CTX_set_status(ASYNC_WAIT_CTX *ctx, int status);
int ASYNC_WAIT_CTX_get_status(ASYNC_WAIT_CTX *ctx);
int ASYNC_WAIT_CTX_get_changed_fds(ASYNC_WAIT_CTX *ctx, OSSL_ASYNC_FD *addfd, size_t *numaddfds,
                                   OSSL_ASYNC_FD *delfd, size_t *numdelfds);
int ASYNC_WAIT_CTX_clear_fd(ASYNC_WAIT_CTX *ctx, const void *key);
#endif

int ASYNC_is_capable(void);

int ASYNC_start_job(ASYNC_JOB **job, ASYNC_WAIT_CTX *ctx, int *ret, int (*func)(void *),
                    void *args, size_t size);
int ASYNC_pause_job(void);

ASYNC_JOB *ASYNC_get_current_job(void);
ASYNC_WAIT_CTX *ASYNC_get_wait_ctx(ASYNC_JOB *job);
void ASYNC_block_pause(void);
void ASYNC_unblock_pause(void);

#define ASYNCJOB_DECLARE_MEM_FUNCTIONS 1
#endif /* OPENSSL_ASYNC_H */

/*
 * Stack allocators (OpenSSL 3.2+). Declared here unless an OpenSSL 3.2+ <openssl/async.h>, which has
 * them already, was included first. The allocator is called with *num == 32768 and may store a
 * different usable size back into *num. ASYNC_set_mem_functions returns 0 once any job stack has
 * been allocated in the process, and always 0 on Windows.
 */
#if defined(ASYNCJOB_DECLARE_MEM_FUNCTIONS) || !defined(OPENSSL_VERSION_NUMBER) \
    || OPENSSL_VERSION_NUMBER < 0x30200000L
typedef void *(*ASYNC_stack_alloc_fn)(size_t *num);
typedef void (*ASYNC_stack_free_fn)(void *addr);
int ASYNC_set_mem_functions(ASYNC_stack_alloc_fn alloc_fn, ASYNC_stack_free_fn free_fn);
void ASYNC_get_mem_functions(ASYNC_stack_alloc_fn *alloc_fn, ASYNC_stack_free_fn *free_fn);
#endif

#ifdef __cplusplus
}
#endif
#endif /* ASYNCJOB_H */
