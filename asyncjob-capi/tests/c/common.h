/*
 * Shared helpers for the C test programs. Each program is built twice by the test driver:
 *   -DTEST_OPENSSL  against the system <openssl/async.h> and -lcrypto (reference run), and
 *   (default)       against include/asyncjob.h and libasyncjob.
 * Defined-behaviour checks must pass in both builds; checks of our documented deviations (cases where
 * OpenSSL crashes or corrupts state) are compiled only into the libasyncjob build.
 */
#ifndef ASYNCJOB_TEST_COMMON_H
#define ASYNCJOB_TEST_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TEST_OPENSSL
#include <openssl/async.h>
#include <openssl/crypto.h>
#else
#include "asyncjob.h"
#endif

static int t_checks, t_failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        t_checks++;                                                                    \
        if (!(cond)) {                                                                 \
            t_failures++;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                              \
    } while (0)

#define CHECK_EQ(a, b)                                                                 \
    do {                                                                               \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                        \
        t_checks++;                                                                    \
        if (t_a_ != t_b_) {                                                            \
            t_failures++;                                                              \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n",        \
                    __FILE__, __LINE__, #a, t_a_, #b, t_b_);                           \
        }                                                                              \
    } while (0)

/* Prints the summary line the Rust driver parses, and the exit status. */
static int t_report(const char *name)
{
    printf("%s: %d checks, %d failures\n", name, t_checks, t_failures);
    return t_failures == 0 ? 0 : 1;
}

#endif
