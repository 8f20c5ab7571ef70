/*
 * dwf_rng.h - the deterministic random number generator (xoshiro256**).
 *
 * A dwf_rng is a plain value owned by whoever holds it (a trainer, a test);
 * there is no global generator. The same seed gives the same stream on
 * every machine. The state is four 64-bit words, so it can be saved into a
 * checkpoint and restored exactly.
 */
#ifndef DWF_RNG_H
#define DWF_RNG_H

#include <stdint.h>

typedef struct dwf_rng {
    uint64_t s[4];
} dwf_rng;

/* Seeds the generator from one 64-bit value (via splitmix64). */
void dwf_rng_seed(dwf_rng *r, uint64_t seed);
/* Seeds from a seed and a stream number, for independent derived streams. */
void dwf_rng_seed2(dwf_rng *r, uint64_t seed, uint64_t stream);

uint64_t dwf_rng_u64(dwf_rng *r);
/* Uniform in [0, 1) with 53 bits. */
double dwf_rng_uniform(dwf_rng *r);
/* Uniform integer in [0, n), unbiased. n > 0. */
uint64_t dwf_rng_below(dwf_rng *r, uint64_t n);
/* Standard normal (Box-Muller, no cached spare so the state is the stream). */
double dwf_rng_normal(dwf_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void dwf_rng_shuffle(dwf_rng *r, int *idx, int n);

#endif
