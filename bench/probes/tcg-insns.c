// SPDX-License-Identifier: GPL-2.0
/*
 * tcg-insns: a QEMU TCG plugin that counts the guest instructions each vCPU executes, per
 * translation block, for scripts/profile.sh. Under TCG there is no PMU to sample, and the
 * count of instructions executed is exact and repeatable where a time is not.
 *
 * The guest marks the phases of its load with a user-mode CPUID of leaf MARK_LEAF (loaded by a
 * "mov eax, imm32" earlier in the same block; other programs run CPUID too): at each, the
 * plugin appends
 * every block's cumulative counts to its output, as lines
 * "MARK VADDR INSNS COUNT0 COUNT1 RETS LOCKED IRQ TSC" (MARK counts from 0; COUNTn is how often
 * vCPU n entered the block; then how many of its instructions are returns, atomic
 * read-modify-writes or full fences, interrupt-flag changes (cli, sti, popf), and clock reads
 * (rdtsc, rdtscp): instructions TCG makes dearer than others). The profile is the difference
 * between two marks.
 *
 *   qemu-system-x86_64 -plugin build/tcg-insns.so,out=OUTPUT ...
 *
 * QEMU 7.2's plugin API (version 1): its few declarations are written out below, as the
 * Debian package ships no header.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
					  enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
					    qemu_plugin_vcpu_udata_cb_t cb,
					    enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define NR_VCPUS 2
/* "EVNT": a leaf no CPU defines (evnotify-bench's mark_phase). */
#define MARK_LEAF 0x45564e54u
/* Distinct blocks a boot translates: well under this (open addressing, never full). */
#define TABLE (1u << 21)

/* The kinds of instruction a block's line counts, beside all of them. */
enum kind { RET, LOCKED, IRQ, TSC, KINDS };

struct block {
	uint64_t vaddr;
	uint32_t insns;
	uint8_t kinds[KINDS];
	/* Written by the vCPU's own thread only; read at a mark (aligned: never torn). */
	uint64_t count[NR_VCPUS];
};

static struct block *table;
static unsigned used;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;
static unsigned marks;

/* The block at vaddr with insns instructions (a retranslation may differ), made if new. */
static struct block *lookup(uint64_t vaddr, uint32_t insns)
{
	uint64_t h = (vaddr ^ insns) * 0x9e3779b97f4a7c15ull;
	struct block *b;

	for (unsigned i = h >> 43;; i = (i + 1) & (TABLE - 1)) {
		b = &table[i];
		if (b->insns == 0) {
			if (++used > TABLE / 2) {
				fprintf(stderr, "tcg-insns: more than %u blocks\n", TABLE / 2);
				abort();
			}
			b->vaddr = vaddr;
			b->insns = insns;
			return b;
		}
		if (b->vaddr == vaddr && b->insns == insns)
			return b;
	}
}

static void exec(unsigned int vcpu, void *udata)
{
	struct block *b = udata;

	if (vcpu < NR_VCPUS)
		b->count[vcpu]++;
}

static void mark(unsigned int vcpu, void *udata)
{
	(void)vcpu;
	(void)udata;
	pthread_mutex_lock(&lock);
	for (unsigned i = 0; i < TABLE; i++) {
		struct block *b = &table[i];

		if (b->insns && (b->count[0] || b->count[1]))
			fprintf(out, "%u %" PRIx64 " %u %" PRIu64 " %" PRIu64 " %u %u %u %u\n", marks,
				b->vaddr, b->insns, b->count[0], b->count[1], b->kinds[RET],
				b->kinds[LOCKED], b->kinds[IRQ], b->kinds[TSC]);
	}
	fflush(out);
	marks++;
	pthread_mutex_unlock(&lock);
}

/* Which kind an x86 instruction is, if any: prefixes skipped (a lock prefix noted). */
static int kind(const uint8_t *op, size_t len)
{
	bool lock = false;
	size_t i = 0;

	for (; i < len; i++) {
		if (op[i] == 0xf0)
			lock = true;
		else if (!(op[i] == 0x66 || op[i] == 0x67 || op[i] == 0xf2 || op[i] == 0xf3 ||
			   op[i] == 0x2e || op[i] == 0x3e || op[i] == 0x26 || op[i] == 0x36 ||
			   op[i] == 0x64 || op[i] == 0x65 || (op[i] & 0xf0) == 0x40))
			break;
	}
	if (i >= len)
		return -1;
	op += i;
	len -= i;
	if (lock)
		return LOCKED;
	switch (op[0]) {
	case 0xc3:
	case 0xc2:
		return RET;
	case 0x86:
	case 0x87: /* xchg with memory: locked without the prefix */
		return len > 1 && (op[1] >> 6) != 3 ? LOCKED : -1;
	case 0xfa:
	case 0xfb:
	case 0x9d:
		return IRQ;
	case 0x0f:
		if (len > 1 && op[1] == 0x31)
			return TSC;
		if (len > 2 && op[1] == 0x01 && op[2] == 0xf9)
			return TSC;
		if (len > 2 && op[1] == 0xae && op[2] == 0xf0)
			return LOCKED; /* mfence */
		return -1;
	}
	return -1;
}

static void translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);
	uint32_t eax = 0;
	struct block *b;

	(void)id;
	uint8_t kinds[KINDS] = { 0 };

	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		int k = kind(qemu_plugin_insn_data(insn), qemu_plugin_insn_size(insn));

		if (k >= 0)
			kinds[k]++;
	}
	pthread_mutex_lock(&lock);
	b = lookup(qemu_plugin_tb_vaddr(tb), n);
	memcpy(b->kinds, kinds, sizeof(kinds));
	pthread_mutex_unlock(&lock);
	qemu_plugin_register_vcpu_tb_exec_cb(tb, exec, QEMU_PLUGIN_CB_NO_REGS, b);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		const uint8_t *op = qemu_plugin_insn_data(insn);
		size_t len = qemu_plugin_insn_size(insn);

		if (len == 5 && op[0] == 0xb8)
			memcpy(&eax, op + 1, 4);
		/* CPUID (0f a2) of the mark's leaf, in user space: the guest's mark. */
		if (qemu_plugin_insn_vaddr(insn) < 0x800000000000ull && len == 2 && op[0] == 0x0f &&
		    op[1] == 0xa2 && eax == MARK_LEAF)
			qemu_plugin_register_vcpu_insn_exec_cb(insn, mark, QEMU_PLUGIN_CB_NO_REGS,
							       NULL);
	}
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
							       const qemu_info_t *info, int argc,
							       char **argv)
{
	(void)info;
	if (argc != 1 || strncmp(argv[0], "out=", 4) || !(out = fopen(argv[0] + 4, "w"))) {
		fprintf(stderr, "tcg-insns: usage: -plugin tcg-insns.so,out=OUTPUT\n");
		return -1;
	}
	table = calloc(TABLE, sizeof(*table));
	if (!table)
		return -1;
	qemu_plugin_register_vcpu_tb_trans_cb(id, translate);
	return 0;
}
