#include "dwf_rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void dwf_rng_seed(dwf_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

void dwf_rng_seed2(dwf_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ull);
    uint64_t mixed = splitmix64(&x);
    dwf_rng_seed(r, mixed ^ stream);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t dwf_rng_u64(dwf_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double dwf_rng_uniform(dwf_rng *r)
{
    return (double)(dwf_rng_u64(r) >> 11) * 0x1.0p-53;
}

uint64_t dwf_rng_below(dwf_rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = dwf_rng_u64(r);
    while (x >= limit);
    return x % n;
}

double dwf_rng_normal(dwf_rng *r)
{
    double u1;
    do
        u1 = dwf_rng_uniform(r);
    while (u1 <= 0.0);
    double u2 = dwf_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void dwf_rng_shuffle(dwf_rng *r, int *idx, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)dwf_rng_below(r, (uint64_t)i + 1);
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}
