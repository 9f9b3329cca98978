/* icefold_cycles.c: QEMU TCG plugin (plugin API version 1, QEMU 7.2) that counts, between the
 * firmware's marker functions, the executed instructions and an estimate of the cycles a
 * Cortex-M4 would take for them. Built and loaded by `icefold mcu` (tools/src/mcu/cycles.rs):
 *
 *   cc -shared -fPIC -O2 -o libicefold_cycles.so icefold_cycles.c
 *   qemu-system-arm ... -plugin libicefold_cycles.so,start=A,end=A,layer_start=A,layer_end=A,out=F
 *
 * Arguments (addresses of the firmware's `#[no_mangle]` markers, from the ELF's symbol table; the
 * Thumb bit is ignored):
 *   start, end              icefold_inference_start / icefold_inference_end
 *   layer_start, layer_end  icefold_layer_start / icefold_layer_end (optional)
 *   out                     the file the records go to (default: stderr)
 *   refill                  cycles a taken branch adds (default 3)
 *
 * Records, one per line (counts between the first instructions of the two markers, so they
 * include the marker calls themselves: a handful of instructions):
 *   LAYER <inference> <layer> <instructions> <cycles>   at each layer_end (layers counted from 0
 *                                                       after each start)
 *   INFERENCE <inference> <instructions> <cycles>       at each end
 *   TOTAL <instructions> <cycles>                       when QEMU exits
 *
 * Cycle model: Cortex-M4 Technical Reference Manual (r0p1), table 3-1 and section 3.3.2, with
 * zero wait-state memory. Each instruction gets a weight when it is translated:
 *   data processing, moves, shifts, extends, bit fields, compares, saturating and SIMD    1
 *   every multiply and multiply-accumulate (MUL, MLA, SMULL, SMLAL, SMLAD, SMLABB, ...)   1
 *   SDIV, UDIV                                                                            7
 *   LDR/LDRB/LDRH/LDRSB/LDRSH/LDREX, STR/STRB/STRH/STREX                                  2
 *     1 instead when it directly follows a single load and its address does not use that
 *       load's destination (loads and stores pipeline behind a load, never behind a store)
 *   LDRD, STRD, TBB, TBH                                                                  3
 *   LDM, STM, PUSH, POP: 1 + the number of registers (PC included)
 *   any load or store whose address register the previous data-processing or multiply
 *     instruction wrote                                                                  +1
 *   VFP: arithmetic, compare, convert, moves 1; VMLA/VMLS/VFMA/VFMS/VNMLA/VNMLS 3;
 *     VDIV/VSQRT 14; VLDR/VSTR 2; VLDM/VSTM/VPUSH/VPOP 1 + words (a D register is 2 words)
 *   IT 1; an instruction IT skips is charged as if it ran
 *   B, BL, BX, BLX, CBZ, CBNZ 1, plus `refill` (3) at run time whenever the next executed
 *     translation block does not start where the previous one falls through: every branch ends a
 *     block, so this charges exactly the taken branches, calls, returns and exception entries.
 * Not modelled: flash wait states, bus contention, unaligned accesses, data-dependent divide
 * times, IT folding, interrupt latency. Weights are fixed per translation block (no pipelining
 * across a block's start), so where QEMU splits blocks (under -icount, at I/O) moves the
 * estimate by a cycle or a refill. Cortex-M3 has the same integer pipeline but slower long
 * multiplies; Cortex-M0 and M33 time differently: the tool reports cycles for Cortex-M4 only.
 *
 * The plugin API is declared below by hand (the few functions used), so no QEMU headers are
 * needed to build it. One vCPU (Cortex-M): plain counters, no atomics. */
#include <ctype.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int, void *);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, qemu_plugin_vcpu_tb_trans_cb_t);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, qemu_plugin_vcpu_udata_cb_t,
                                          enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *, qemu_plugin_vcpu_udata_cb_t,
                                            enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *, enum qemu_plugin_op,
                                                void *, uint64_t);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, qemu_plugin_udata_cb_t, void *);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *);
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* ------------------------------------------------------------------ instruction kinds */

enum kind { K_ALU, K_MUL, K_DIV, K_LOAD, K_STORE, K_DUAL, K_MULTI, K_BRANCH, K_TABLE, K_IT,
            K_VALU, K_VMAC, K_VDIV, K_VMEM, K_VMULTI };

/* Mnemonics by kind, space separated; anything not listed is K_ALU. */
static const struct { enum kind kind; const char *names; } KINDS[] = {
    {K_MUL, "mul mla mls smull umull smlal umlal umaal smlabb smlabt smlatb smlatt smlawb smlawt "
            "smulbb smulbt smultb smultt smulwb smulwt smlad smladx smlsd smlsdx smuad smuadx "
            "smusd smusdx smlald smlaldx smlsld smlsldx smlalbb smlalbt smlaltb smlaltt smmul "
            "smmulr smmla smmlar smmls smmlsr"},
    {K_DIV, "sdiv udiv"},
    {K_LOAD, "ldr ldrb ldrh ldrsb ldrsh ldrt ldrbt ldrht ldrsbt ldrsht ldrex ldrexb ldrexh pld pli"},
    {K_STORE, "str strb strh strt strbt strht strex strexb strexh"},
    {K_DUAL, "ldrd strd"},
    {K_MULTI, "ldm ldmia ldmfd ldmdb ldmea pop stm stmia stmea stmdb stmfd push"},
    {K_BRANCH, "b bl blx bx cbz cbnz"},
    {K_TABLE, "tbb tbh"},
    {K_VALU, "vadd vsub vmul vnmul vabs vneg vcmp vcmpe vcvt vcvtr vcvtb vcvtt vmov vmrs vmsr"},
    {K_VMAC, "vmla vmls vnmla vnmls vfma vfms vfnma vfnms"},
    {K_VDIV, "vdiv vsqrt"},
    {K_VMEM, "vldr vstr"},
    {K_VMULTI, "vldm vldmia vldmdb vpop vstm vstmia vstmdb vpush"},
};

static int listed(const char *names, const char *m)
{
    size_t n = strlen(m);
    for (const char *p = names; *p;) {
        const char *e = strchr(p, ' ');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, m, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static int find_kind(const char *m, enum kind *k)
{
    if (m[0] == 'i' && m[1] == 't') { /* it, ite, itt, itete, ... */
        int only_te = 1;
        for (const char *p = m + 2; *p; p++) only_te &= (*p == 't' || *p == 'e');
        if (only_te) { *k = K_IT; return 1; }
    }
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++)
        if (listed(KINDS[i].names, m)) { *k = KINDS[i].kind; return 1; }
    return 0;
}

/* The kind of a mnemonic as the disassembler prints it: lower case, without the `.w` / `.f32`
 * qualifier; an IT-predicated form carries a condition suffix (`ldrne`), a flag-setting one an
 * `s` (`muls`), or both. */
static enum kind kind_of(const char *mnemonic)
{
    static const char *CONDS = "eq ne cs hs cc lo mi pl vs vc hi ls ge lt gt le al";
    char m[32];
    enum kind k;
    snprintf(m, sizeof m, "%s", mnemonic);
    for (int pass = 0; pass < 2; pass++) {
        if (find_kind(m, &k)) return k;
        size_t n = strlen(m);
        if (n >= 3) {
            char cond[3] = {m[n - 2], m[n - 1], 0};
            if (listed(CONDS, cond)) {
                char base[32];
                snprintf(base, sizeof base, "%.*s", (int)(n - 2), m);
                if (find_kind(base, &k)) return k;
                if (pass == 0 && base[strlen(base) - 1] == 's') {
                    base[strlen(base) - 1] = 0;
                    if (find_kind(base, &k)) return k;
                }
            }
        }
        if (n < 2 || m[n - 1] != 's') break;
        m[n - 1] = 0; /* flag-setting form: try again without the `s` */
    }
    return K_ALU;
}

static int is_memory(enum kind k)
{
    return k == K_LOAD || k == K_STORE || k == K_DUAL || k == K_MULTI || k == K_VMEM ||
           k == K_VMULTI;
}

/* ------------------------------------------------------------------ operand text */

/* True if register `reg` appears as a whole word in text[0..len). */
static int mentions(const char *text, size_t len, const char *reg)
{
    size_t r = strlen(reg);
    if (!r) return 0;
    for (size_t i = 0; i + r <= len; i++) {
        if (strncmp(text + i, reg, r)) continue;
        int left = i == 0 || !isalnum((unsigned char)text[i - 1]);
        int right = i + r == len || !isalnum((unsigned char)text[i + r]);
        if (left && right) return 1;
    }
    return 0;
}

/* The first operand (`r3` of `add r3, r1, r2`), or "" if it is not a register. */
static void first_operand(const char *ops, char *dst, size_t cap)
{
    size_t n = 0;
    while (*ops == ' ' || *ops == '\t') ops++;
    while (ops[n] && !strchr(", \t!", ops[n]) && n + 1 < cap) { dst[n] = ops[n]; n++; }
    dst[n] = 0;
    if (dst[0] == '#' || dst[0] == '{') dst[0] = 0;
}

/* Words a register list `{...}` moves (ranges `r4-r7`; a D register moves 2 words). */
static int list_words(const char *ops)
{
    const char *open = strchr(ops, '{'), *close = open ? strchr(open, '}') : NULL;
    if (!open || !close) return 1;
    int words = 0;
    for (const char *p = open + 1; p < close;) {
        while (p < close && (*p == ' ' || *p == ',')) p++;
        if (p >= close) break;
        char reg[16];
        size_t n = 0;
        while (p < close && *p != ',' && *p != ' ' && n + 1 < sizeof reg) reg[n++] = *p++;
        reg[n] = 0;
        int width = reg[0] == 'd' ? 2 : 1;
        const char *dash = strchr(reg, '-');
        words += dash ? (atoi(dash + 2) - atoi(reg + 1) + 1) * width : width;
    }
    return words > 0 ? words : 1;
}

/* ------------------------------------------------------------------ counting */

static uint64_t insns, cycles;
static int refill = 3;
static uint64_t start_pc = UINT64_MAX, end_pc = UINT64_MAX, layer_start_pc = UINT64_MAX,
                layer_end_pc = UINT64_MAX; /* UINT64_MAX: no such marker */
static FILE *out;

struct mark { uint64_t insns, cycles; };
static struct mark inference_mark, layer_mark;
static unsigned inference, layer;
static int in_inference, in_layer;

static void on_start(unsigned vcpu, void *udata)
{
    (void)vcpu; (void)udata;
    inference_mark = (struct mark){insns, cycles};
    in_inference = 1;
    layer = 0;
}

static void on_end(unsigned vcpu, void *udata)
{
    (void)vcpu; (void)udata;
    if (!in_inference) return;
    fprintf(out, "INFERENCE %u %" PRIu64 " %" PRIu64 "\n", inference,
            insns - inference_mark.insns, cycles - inference_mark.cycles);
    fflush(out);
    in_inference = 0;
    inference++;
}

static void on_layer_start(unsigned vcpu, void *udata)
{
    (void)vcpu; (void)udata;
    layer_mark = (struct mark){insns, cycles};
    in_layer = 1;
}

static void on_layer_end(unsigned vcpu, void *udata)
{
    (void)vcpu; (void)udata;
    if (!in_layer || !in_inference) return;
    fprintf(out, "LAYER %u %u %" PRIu64 " %" PRIu64 "\n", inference, layer,
            insns - layer_mark.insns, cycles - layer_mark.cycles);
    in_layer = 0;
    layer++;
}

/* Where the last executed block falls through to: a block starting anywhere else was reached by
 * a taken branch (or an exception), which refills the pipeline. */
struct block { uint64_t start, fall_through; };
static const struct block *last_block;

static void on_block(unsigned vcpu, void *udata)
{
    (void)vcpu;
    const struct block *b = udata;
    if (last_block && b->start != last_block->fall_through) cycles += (uint64_t)refill;
    last_block = b;
}

static void translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    /* Lives as long as the block may run: never freed (blocks are few). */
    struct block *b = calloc(1, sizeof *b);
    b->start = qemu_plugin_tb_vaddr(tb);
    enum kind prev = K_BRANCH;  /* nothing to pipeline behind at a block's start */
    char prev_dst[16] = "";     /* register the previous instruction wrote, if any */
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        char *text = qemu_plugin_insn_disas(insn);
        const char *s = text ? text : "";
        while (*s == ' ') s++;
        char mnemonic[32];
        size_t m = 0;
        while (s[m] && s[m] != ' ' && s[m] != '\t' && s[m] != '.' && m + 1 < sizeof mnemonic) {
            mnemonic[m] = (char)tolower((unsigned char)s[m]);
            m++;
        }
        mnemonic[m] = 0;
        const char *ops = s + m;
        while (*ops && *ops != ' ' && *ops != '\t') ops++; /* past a `.w` qualifier */
        enum kind k = kind_of(mnemonic);
        const char *lb = strchr(ops, '['), *rb = lb ? strchr(lb, ']') : NULL;
        size_t addr_len = lb && rb ? (size_t)(rb - lb) : 0;

        uint64_t w = 1;
        switch (k) {
        case K_DIV: w = 7; break;
        case K_LOAD: case K_STORE:
            w = 2;
            if (prev == K_LOAD && !(addr_len && mentions(lb, addr_len, prev_dst))) w = 1;
            break;
        case K_DUAL: case K_TABLE: case K_VMAC: w = 3; break;
        case K_VDIV: w = 14; break;
        case K_VMEM: w = 2; break;
        case K_MULTI: case K_VMULTI: w = 1 + (uint64_t)list_words(ops); break;
        default: w = 1;
        }
        if (is_memory(k) && (prev == K_ALU || prev == K_MUL) && prev_dst[0]) {
            int uses;
            if (addr_len) uses = mentions(lb, addr_len, prev_dst);
            else if (!strcmp(mnemonic, "push") || !strcmp(mnemonic, "pop") ||
                     !strcmp(mnemonic, "vpush") || !strcmp(mnemonic, "vpop"))
                uses = !strcmp(prev_dst, "sp");
            else { char base[16]; first_operand(ops, base, sizeof base); uses = !strcmp(base, prev_dst); }
            w += (uint64_t)uses;
        }

        prev_dst[0] = 0;
        if ((k == K_LOAD || k == K_ALU || k == K_MUL) && strncmp(mnemonic, "cmp", 3) &&
            strncmp(mnemonic, "cmn", 3) && strncmp(mnemonic, "tst", 3) &&
            strncmp(mnemonic, "teq", 3) && strcmp(mnemonic, "nop"))
            first_operand(ops, prev_dst, sizeof prev_dst);
        prev = k;

        /* Marker callbacks run before the inline counters of their instruction. */
        if (pc == (start_pc & ~1ULL))
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_start, QEMU_PLUGIN_CB_NO_REGS, NULL);
        if (pc == (end_pc & ~1ULL))
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_end, QEMU_PLUGIN_CB_NO_REGS, NULL);
        if (pc == (layer_start_pc & ~1ULL))
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_layer_start, QEMU_PLUGIN_CB_NO_REGS, NULL);
        if (pc == (layer_end_pc & ~1ULL))
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_layer_end, QEMU_PLUGIN_CB_NO_REGS, NULL);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &insns, 1);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &cycles, w);
        if (i + 1 == n) b->fall_through = pc + qemu_plugin_insn_size(insn);
        free(text);
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id; (void)udata;
    fprintf(out, "TOTAL %" PRIu64 " %" PRIu64 "\n", insns, cycles);
    fflush(out);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    out = stderr;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        if (!eq) { fprintf(stderr, "icefold_cycles: expected key=value, got %s\n", a); return -1; }
        size_t key = (size_t)(eq - a);
        const char *v = eq + 1;
#define KEY(k) (key == strlen(k) && !strncmp(a, k, key))
        if (KEY("start")) start_pc = strtoull(v, NULL, 0);
        else if (KEY("end")) end_pc = strtoull(v, NULL, 0);
        else if (KEY("layer_start")) layer_start_pc = strtoull(v, NULL, 0);
        else if (KEY("layer_end")) layer_end_pc = strtoull(v, NULL, 0);
        else if (KEY("refill")) refill = atoi(v);
        else if (KEY("out")) {
            out = fopen(v, "w");
            if (!out) { perror(v); return -1; }
        } else { fprintf(stderr, "icefold_cycles: unknown argument %s\n", a); return -1; }
#undef KEY
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
