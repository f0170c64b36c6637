/* rte_hash side of benches/bench_tables.py --vs-peer: DPDK's cuckoo hash on the same workload as
 * the FlowTable peer benches, driven one timed pass at a time over stdin so the two alternate.
 *
 *   rte_hash_peer CAPACITY FILL STREAM SEED
 *
 * Builds an rte_hash of CAPACITY entries (16-byte keys: an IPv4 5-tuple padded, rte_hash_crc,
 * default flags), adds FILL random keys, and makes two streams of STREAM keys in one contiguous
 * array each: stored keys in random order (hits) and random keys checked absent (misses). Prints
 * "ready ENTRIES STREAM", then answers each stdin line "hit|miss BURST" (BURST 1..64) with one
 * pass of rte_hash_lookup_bulk over that stream in bursts of BURST:
 *   "ok hit|miss BURST KEYS SECONDS"   (positions then checked: every hit at its key's position,
 *                                       every miss -ENOENT)
 *   "error TEXT"                       (and exit status 1 at the end)
 * "quit" or end of input ends it. EAL runs with --no-huge --no-pci --no-shconf: no hugepages, no
 * devices, no files left in /var/run. Everything it allocates is freed before exit. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>

#define MAX_BURST 64

struct key16 {
	uint32_t src, dst;
	uint16_t sport, dport;
	uint8_t proto;
	uint8_t pad[3];
};

/* splitmix64: a small deterministic generator for the keys and the lookup order. */
static uint64_t next_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static struct key16 random_key(uint64_t *s)
{
	struct key16 k;
	const uint64_t a = next_rand(s), b = next_rand(s);
	memset(&k, 0, sizeof(k));
	k.src = (uint32_t)a;
	k.dst = (uint32_t)(a >> 32);
	k.sport = (uint16_t)b;
	k.dport = (uint16_t)(b >> 16);
	k.proto = (b >> 32) & 1 ? 6 : 17;
	return k;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static unsigned long parse_count(const char *s, const char *what)
{
	char *end = NULL;
	errno = 0;
	const unsigned long v = strtoul(s, &end, 10);
	if (errno || !end || *end || v == 0 || v > (1ul << 30)) {
		fprintf(stderr, "rte_hash_peer: %s must be an integer in 1..2**30, got '%s'\n", what, s);
		exit(2);
	}
	return v;
}

/* One timed pass of rte_hash_lookup_bulk over keys[0..n) in bursts of burst; positions to pos. */
static double pass(const struct rte_hash *h, const struct key16 *keys, size_t n, unsigned burst, int32_t *pos)
{
	const void *ptrs[MAX_BURST];
	const double t0 = now_s();
	for (size_t i = 0; i < n; i += burst) {
		const unsigned m = n - i < burst ? (unsigned)(n - i) : burst;
		for (unsigned j = 0; j < m; ++j) ptrs[j] = &keys[i + j];
		rte_hash_lookup_bulk(h, ptrs, m, pos + i);
	}
	return now_s() - t0;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: rte_hash_peer CAPACITY FILL STREAM SEED\n");
		return 2;
	}
	const unsigned long capacity = parse_count(argv[1], "CAPACITY");
	const unsigned long fill = parse_count(argv[2], "FILL");
	const unsigned long stream = parse_count(argv[3], "STREAM");
	uint64_t seed = strtoull(argv[4], NULL, 10);
	if (fill > capacity) {
		fprintf(stderr, "rte_hash_peer: FILL (%lu) must be <= CAPACITY (%lu)\n", fill, capacity);
		return 2;
	}
	char *eal_args[] = {argv[0], "--no-huge", "--no-pci", "--no-shconf", "--no-telemetry",
			    "-m", "512", "--log-level=lib.eal:error", NULL};
	if (rte_eal_init(8, eal_args) < 0) {
		printf("error rte_eal_init failed (rte_errno %d)\n", rte_errno);
		return 1;
	}
	int rc = 0;
	struct rte_hash_parameters p = {
		.name = "vnfkit_peer", .entries = (uint32_t)capacity, .key_len = sizeof(struct key16),
		.hash_func = rte_hash_crc, .hash_func_init_val = 0, .socket_id = 0,
	};
	struct rte_hash *h = rte_hash_create(&p);
	struct key16 *stored = malloc(fill * sizeof(*stored));
	int32_t *stored_pos = malloc(fill * sizeof(*stored_pos));
	struct key16 *hits = malloc(stream * sizeof(*hits));
	struct key16 *misses = malloc(stream * sizeof(*misses));
	int32_t *want = malloc(stream * sizeof(*want));
	int32_t *pos = malloc(stream * sizeof(*pos));
	if (!h || !stored || !stored_pos || !hits || !misses || !want || !pos) {
		printf("error out of memory (rte_hash_create or malloc)\n");
		rc = 1;
		goto out;
	}
	size_t entries = 0;
	while (entries < fill) {  /* random keys may repeat: keep only new ones */
		const struct key16 k = random_key(&seed);
		if (rte_hash_lookup(h, &k) >= 0) continue;
		const int32_t at = rte_hash_add_key(h, &k);
		if (at < 0) {
			printf("error rte_hash_add_key failed (%d) at %zu keys\n", at, entries);
			rc = 1;
			goto out;
		}
		stored[entries] = k;
		stored_pos[entries++] = at;
	}
	for (size_t i = 0; i < stream; ++i) {
		const size_t j = next_rand(&seed) % entries;
		hits[i] = stored[j];
		want[i] = stored_pos[j];
		do misses[i] = random_key(&seed);
		while (rte_hash_lookup(h, &misses[i]) != -ENOENT);
	}
	printf("ready %zu %lu\n", entries, stream);
	fflush(stdout);
	char line[128];
	while (fgets(line, sizeof(line), stdin)) {
		char what[16];
		unsigned burst = 0;
		if (strncmp(line, "quit", 4) == 0) break;
		if (sscanf(line, "%15s %u", what, &burst) != 2 || burst < 1 || burst > MAX_BURST ||
		    (strcmp(what, "hit") != 0 && strcmp(what, "miss") != 0)) {
			printf("error bad command (want 'hit|miss BURST', BURST 1..%d): %s", MAX_BURST, line);
			fflush(stdout);
			rc = 1;
			continue;
		}
		const int hit = what[0] == 'h';
		const double secs = pass(h, hit ? hits : misses, stream, burst, pos);
		size_t wrong = 0;
		for (size_t i = 0; i < stream; ++i) wrong += hit ? pos[i] != want[i] : pos[i] != -ENOENT;
		if (wrong) {
			printf("error %s %u: %zu of %lu lookups gave a wrong position\n", what, burst, wrong, stream);
			rc = 1;
		} else {
			printf("ok %s %u %lu %.9f\n", what, burst, stream, secs);
		}
		fflush(stdout);
	}
out:
	free(pos);
	free(want);
	free(misses);
	free(hits);
	free(stored_pos);
	free(stored);
	rte_hash_free(h);
	rte_eal_cleanup();
	return rc;
}
