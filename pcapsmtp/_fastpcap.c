/* The classic-pcap record loop, the pcapng enhanced-packet-block loop and the
 * Ethernet/IPv4/TCP fast path of packets.Decoder, in C.
 *
 * Why C: reading and decoding are the part of the pipeline that every worker of a
 * sharded analysis repeats for the whole file (each worker reads every frame to find
 * its own connections).  Measured on the 300k-packet benchmark capture, per worker
 * with two workers, CPU: reading every record 0.48 s and decoding it 0.80 s in Python,
 * a third of the whole run's CPU.  The Python versions (capture.CaptureReader's
 * _pcap_frames, capture._PcapngBlocks and packets.Decoder.decode) stay the reference and
 * the fallback: this module is optional (built when a C compiler is there), must give
 * the same frames, times, segments, counts and notes, and tests/test_fastpcap.py holds
 * it to that.
 *
 * One call reads records (or blocks) from ``buf`` at ``pos`` until it needs more bytes
 * than the buffer holds, meets a record it leaves to Python, or has read a frame whose
 * number is a multiple of ``boundary`` (so that the pipeline can sweep closed
 * connections at exactly the frames it would have without this module).  For each
 * frame it appends to the result list:
 *   - a Segment, when the frame is untagged Ethernet + IPv4 without options or
 *     fragmentation + a sane TCP header (packets.Decoder.decode's fast path, same tests
 *     in the same order) and its connection is in this worker's shard;
 *   - nothing, when it is such a frame of another shard's connection (counted);
 *   - a Frame otherwise, for packets.Decoder to decode in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* PyMemberDef (in descrobject.h only from 3.12) */
#include <stdint.h>
#include <string.h>

/* packets.Segment's fields, in order: frame .. ip_version, ip_id */
#define SEGMENT_ARGS 14

enum { STOP_BOUNDARY = 0, STOP_NEED = 1, STOP_OVERSIZE = 2 };

static inline uint32_t be16(const unsigned char *p) { return ((uint32_t)p[0] << 8) | p[1]; }

static inline uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint32_t le32(const unsigned char *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

/* packets._mix32: MurmurHash3's 32-bit finaliser. */
static inline uint32_t mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    return h ^ (h >> 16);
}

/* packets.shard_hash for two IPv4 addresses (the caller reduces it modulo the count). */
static inline uint32_t shard_hash4(uint32_t src, uint32_t dst, uint32_t sport, uint32_t dport)
{
    return mix32(mix32(src ^ sport * 0x9E3779B1u) + mix32(dst ^ dport * 0x9E3779B1u));
}

/* The dotted-quad text of an IPv4 address, cached in ``names`` (int -> str) as
 * packets._addr4 caches by raw bytes: one text object per address. */
static PyObject *addr4_text(PyObject *names, uint32_t addr)
{
    PyObject *key = PyLong_FromUnsignedLong(addr);
    if (key == NULL)
        return NULL;
    PyObject *text = PyDict_GetItemWithError(names, key);
    if (text != NULL) {
        Py_INCREF(text);
        Py_DECREF(key);
        return text;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    if (PyDict_GET_SIZE(names) > 65536)
        PyDict_Clear(names);
    text = PyUnicode_FromFormat("%u.%u.%u.%u", addr >> 24, (addr >> 16) & 255,
                                (addr >> 8) & 255, addr & 255);
    if (text == NULL || PyDict_SetItem(names, key, text) < 0) {
        Py_XDECREF(text);
        Py_DECREF(key);
        return NULL;
    }
    Py_DECREF(key);
    return text;
}

/* Segment objects written slot by slot instead of through the dataclass's __init__ (a
 * Python call per segment: 0.6 of 0.9 us per built segment, measured on the 300k-frame
 * benchmark's frames).  Allowed only when every field is a plain object slot of the type
 * (a member descriptor, T_OBJECT_EX, writable) and the type does nothing else in __init__
 * (packets.Segment: a slots dataclass); otherwise the type is called.  The offsets are
 * learnt once per type. */
static const char *const SEGMENT_FIELDS[SEGMENT_ARGS] = {
    "frame", "time", "src", "sport", "dst", "dport", "seq", "ack", "flags", "window",
    "payload", "missing", "ip_version", "ip_id"};
static PyObject *slots_type; /* the type the offsets are for (a strong reference) */
static Py_ssize_t slot_offsets[SEGMENT_ARGS];
static int slots_usable;

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX 16 /* structmember.h's T_OBJECT_EX */
#endif
#ifndef Py_READONLY
#define Py_READONLY 1
#endif

static void learn_slots(PyObject *type)
{
    Py_XDECREF(slots_type);
    Py_INCREF(type);
    slots_type = type;
    slots_usable = 0;
    if (!PyType_Check(type) || ((PyTypeObject *)type)->tp_itemsize != 0
        || PyObject_HasAttrString(type, "__post_init__"))
        return;
    for (int i = 0; i < SEGMENT_ARGS; i++) {
        PyObject *d = PyObject_GetAttrString(type, SEGMENT_FIELDS[i]);
        if (d == NULL) {
            PyErr_Clear();
            return;
        }
        int fits = Py_IS_TYPE(d, &PyMemberDescr_Type)
                   && ((PyMemberDescrObject *)d)->d_common.d_type == (PyTypeObject *)type
                   && ((PyMemberDescrObject *)d)->d_member->type == Py_T_OBJECT_EX
                   && !(((PyMemberDescrObject *)d)->d_member->flags & Py_READONLY);
        if (fits)
            slot_offsets[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!fits)
            return;
    }
    slots_usable = 1;
}

/* A new instance of ``type`` holding ``args`` (references stolen: each args[i] is NULL
 * afterwards when used), or NULL with an error set. */
static PyObject *new_segment(PyObject *type, PyObject **args)
{
    if (type != slots_type)
        learn_slots(type);
    if (!slots_usable)
        return PyObject_Vectorcall(type, args, SEGMENT_ARGS, NULL);
    PyTypeObject *tp = (PyTypeObject *)type;
    PyObject *obj = tp->tp_alloc(tp, 0);
    if (obj == NULL)
        return NULL;
    for (int i = 0; i < SEGMENT_ARGS; i++) {
        *(PyObject **)((char *)obj + slot_offsets[i]) = args[i];
        args[i] = NULL;
    }
    return obj;
}

typedef struct {
    Py_ssize_t shard_index, shard_count;
    PyObject *segment_type, *names;
} Context;

/* The fast path for one frame: 1 and *out a new Segment (or NULL for another shard's
 * segment), 0 when the frame is not for the fast path, -1 on a Python error. */
static int fast_segment(const Context *ctx, const unsigned char *d, Py_ssize_t caplen,
                        Py_ssize_t number, double t, PyObject **out)
{
    *out = NULL;
    if (caplen < 54 || d[12] != 0x08 || d[13] != 0x00 || d[14] != 0x45)
        return 0;
    long total = (long)be16(d + 16);
    uint32_t frag = be16(d + 20);
    if (d[23] != 6 || (frag & 0x3FFF))
        return 0;
    long avail = (long)caplen - 14;
    if (total == 0) /* TSO: the NIC fills the length in later; trust the capture */
        total = avail;
    uint32_t offflags = be16(d + 46);
    long doff = (long)(offflags >> 12) * 4;
    long promised = total - 20;
    if (doff < 20 || doff > promised)
        return 0;
    uint32_t src = be32(d + 26), dst = be32(d + 30);
    uint32_t sport = be16(d + 34), dport = be16(d + 36);
    if (ctx->shard_count > 1
        && (Py_ssize_t)(shard_hash4(src, dst, sport, dport) % (uint32_t)ctx->shard_count)
               != ctx->shard_index)
        return 1; /* another worker's connection: counted, not built */
    long end = 14 + (total < avail ? total : avail); /* strips Ethernet padding */
    long start = 34 + doff;
    long plen = start < end ? end - start : 0;
    PyObject *args[SEGMENT_ARGS] = {NULL};
    int ok = 0;
    args[0] = PyLong_FromSsize_t(number);
    args[1] = PyFloat_FromDouble(t);
    args[2] = addr4_text(ctx->names, src);
    args[3] = PyLong_FromUnsignedLong(sport);
    args[4] = addr4_text(ctx->names, dst);
    args[5] = PyLong_FromUnsignedLong(dport);
    args[6] = PyLong_FromUnsignedLong(be32(d + 38));
    args[7] = PyLong_FromUnsignedLong(be32(d + 42));
    args[8] = PyLong_FromUnsignedLong(offflags & 0xFF);
    args[9] = PyLong_FromUnsignedLong(be16(d + 48));
    args[10] = PyBytes_FromStringAndSize(plen ? (const char *)d + start : "", plen);
    args[11] = PyLong_FromLong(promised - doff - plen);
    args[12] = PyLong_FromLong(4);
    args[13] = PyLong_FromUnsignedLong(be16(d + 18)); /* IPv4 identification */
    for (int i = 0; i < SEGMENT_ARGS; i++)
        if (args[i] == NULL)
            goto done;
    *out = new_segment(ctx->segment_type, args);
    ok = *out != NULL;
done:
    for (int i = 0; i < SEGMENT_ARGS; i++)
        Py_XDECREF(args[i]);
    return ok ? 1 : -1;
}

static PyObject *make_frame(PyObject *frame_type, Py_ssize_t number, double t, long linktype,
                            const unsigned char *d, uint32_t caplen, uint32_t origlen)
{
    PyObject *args[6] = {
        PyLong_FromSsize_t(number), PyFloat_FromDouble(t), PyLong_FromLong(linktype),
        PyLong_FromUnsignedLong(caplen), PyLong_FromUnsignedLong(origlen),
        PyBytes_FromStringAndSize((const char *)d, caplen),
    };
    PyObject *frame = NULL;
    for (int i = 0; i < 6; i++)
        if (args[i] == NULL)
            goto done;
    frame = PyObject_Vectorcall(frame_type, args, 6, NULL);
done:
    for (int i = 0; i < 6; i++)
        Py_XDECREF(args[i]);
    return frame;
}

/* What one call has read: the frames counted, the earliest, latest and last frame times
 * (kept as CaptureInfo and the Python loops keep them) and the list the items go to. */
typedef struct {
    Context ctx;
    Py_ssize_t boundary;
    PyObject *frame_type, *items;
    Py_ssize_t n, decoded;
    int have_first, have_last;
    double first, last, t;
} Reading;

/* The shared arguments: n, first, last (None or a float) and ctx = (shard index, shard
 * count, boundary, Segment type, names dict).  0, or -1 with a Python error set. */
static int start_reading(Reading *r, PyObject *n, PyObject *first, PyObject *last,
                         PyObject *ctx)
{
    if (!PyTuple_Check(ctx)) {
        PyErr_SetString(PyExc_TypeError, "ctx must be a tuple");
        return -1;
    }
    if (!PyArg_ParseTuple(ctx, "nnnOO!", &r->ctx.shard_index, &r->ctx.shard_count,
                          &r->boundary, &r->ctx.segment_type, &PyDict_Type, &r->ctx.names))
        return -1;
    r->n = PyLong_AsSsize_t(n);
    r->have_first = first != Py_None;
    r->have_last = last != Py_None;
    r->first = r->have_first ? PyFloat_AsDouble(first) : 0.0;
    r->last = r->have_last ? PyFloat_AsDouble(last) : 0.0;
    r->decoded = 0;
    return PyErr_Occurred() ? -1 : 0;
}

/* One frame read: counted, its time kept as the Python loops keep it (``first`` and
 * ``last`` move only outwards), and its Segment (this shard's fast-path frame), nothing
 * (another shard's) or Frame (anything else) appended.  0, or -1 on a Python error. */
static int take_frame(Reading *r, long linktype, const unsigned char *d, uint32_t caplen,
                      uint32_t origlen, double t)
{
    r->n++;
    r->t = t;
    if (!r->have_first) {
        r->first = r->last = t;
        r->have_first = r->have_last = 1;
    } else if (t > r->last) {
        r->last = t;
    } else if (t < r->first) {
        r->first = t;
    }
    PyObject *item = NULL;
    int got = linktype == 1 ? fast_segment(&r->ctx, d, caplen, r->n, t, &item) : 0;
    if (got < 0)
        return -1;
    if (got)
        r->decoded++;
    else if ((item = make_frame(r->frame_type, r->n, t, linktype, d, caplen, origlen)) == NULL)
        return -1;
    if (item == NULL)
        return 0;
    int appended = PyList_Append(r->items, item);
    Py_DECREF(item);
    return appended;
}

static PyObject *optional_float(int have, double value)
{
    if (have)
        return PyFloat_FromDouble(value);
    Py_RETURN_NONE;
}

/* (items, pos, n, first, last, t, decoded, stop, need): what both readers return. */
static PyObject *reading_result(Reading *r, Py_ssize_t pos, int stop, unsigned long long need)
{
    PyObject *first = optional_float(r->have_first, r->first);
    PyObject *last = optional_float(r->have_last, r->last);
    if (first == NULL || last == NULL) {
        Py_XDECREF(first);
        Py_XDECREF(last);
        return NULL;
    }
    return Py_BuildValue("(OnnNNdniK)", r->items, pos, r->n, first, last, r->t, r->decoded,
                         stop, need);
}

PyDoc_STRVAR(pcap_batch_doc,
"pcap_batch(buf, pos, n, first, last, fmt, ctx)\n"
"\n"
"Records of a classic pcap file from buf[pos:] (n frames read before; first and last:\n"
"the earliest and latest frame time so far, or None).  fmt = (big_endian, nanosecond,\n"
"extra record bytes, linktype, largest believable caplen, Frame type); ctx = (shard\n"
"index, shard count, boundary, Segment type, names dict).  Returns (items, pos, n, first,\n"
"last, time of the last frame read, frames decoded here, stop reason, bytes needed).");

static PyObject *pcap_batch(PyObject *module, PyObject *const *argv, Py_ssize_t argc)
{
    (void)module;
    int big, nano;
    Py_ssize_t extra;
    long linktype;
    unsigned long long limit;
    Reading r = {0};
    if (argc != 7 || !PyTuple_Check(argv[5])) {
        PyErr_SetString(PyExc_TypeError, "pcap_batch(buf, pos, n, first, last, fmt, ctx)");
        return NULL;
    }
    if (!PyArg_ParseTuple(argv[5], "ppnlKO", &big, &nano, &extra, &linktype, &limit,
                          &r.frame_type))
        return NULL;
    Py_ssize_t pos = PyLong_AsSsize_t(argv[1]);
    if ((pos == -1 && PyErr_Occurred()) || start_reading(&r, argv[2], argv[3], argv[4],
                                                         argv[6]) < 0)
        return NULL;

    Py_buffer view;
    if (PyObject_GetBuffer(argv[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len;
    Py_ssize_t hlen = 16 + extra;
    double div = nano ? 1e9 : 1e6;
    PyObject *result = NULL;
    unsigned long long need = 0;
    int stop;
    if ((r.items = PyList_New(0)) == NULL)
        goto done;
    for (;;) {
        if (pos < 0 || end - pos < hlen) {
            stop = STOP_NEED;
            need = (unsigned long long)hlen;
            break;
        }
        const unsigned char *p = buf + pos;
        uint32_t sec = big ? be32(p) : le32(p);
        uint32_t frac = big ? be32(p + 4) : le32(p + 4);
        uint32_t caplen = big ? be32(p + 8) : le32(p + 8);
        uint32_t origlen = big ? be32(p + 12) : le32(p + 12);
        if (caplen > limit) {
            stop = STOP_OVERSIZE;
            need = caplen;
            break;
        }
        if (end - pos - hlen < (Py_ssize_t)caplen) {
            stop = STOP_NEED;
            need = (unsigned long long)hlen + caplen;
            break;
        }
        /* as Python's sec + frac / div: both exact, one rounding each */
        if (take_frame(&r, linktype, p + hlen, caplen, origlen,
                       (double)sec + (double)frac / div) < 0)
            goto done;
        pos += hlen + caplen;
        if (r.boundary > 0 && r.n % r.boundary == 0) {
            stop = STOP_BOUNDARY;
            break;
        }
    }
    result = reading_result(&r, pos, stop, need);
done:
    PyBuffer_Release(&view);
    Py_XDECREF(r.items);
    return result;
}

/* ---- pcapng ---------------------------------------------------------------------------
 *
 * Why: dumpcap and Wireshark write pcapng by default, so big captures are mostly pcapng.
 * Measured on the 300k-packet benchmark capture as pcapng (editcap -F pcapng), the whole
 * `pcapsmtp analyze --format json` run (two workers), user+sys CPU, two runs each on a
 * shared 2-CPU machine: pure Python 10.60 and 10.57 s (wall 5.7 and 5.6 s), with this
 * loop 6.47 and 6.23 s (wall 3.6 and 3.4 s); the same capture as classic pcap, also in
 * C: 6.06 and 5.99 s.  pcapng is now as fast as pcap.
 *
 * Only Enhanced Packet Blocks are read here.  Everything else -- section headers,
 * interface descriptions, simple and obsolete packet blocks, unknown blocks, and any
 * block whose lengths, interface or timestamp this loop doubts -- stops the call with
 * STOP_HAND, and capture._PcapngBlocks.block reads exactly that block in Python (with
 * its rules and its damage notes) before calling again.  The interfaces come packed by
 * capture._c_interface, one Iface each. */

enum { STOP_HAND = 3 };

typedef struct {
    int32_t linktype;
    int32_t shift;   /* >= 0: the divisor is 2**shift; -1: it is ``div``; -2: ask Python */
    uint64_t div;    /* below 2**63 */
    int64_t offset;  /* if_tsoffset, seconds */
} Iface;

typedef char iface_is_packed[sizeof(Iface) == 24 ? 1 : -1];

static inline uint32_t rd32(const unsigned char *p, int big) { return big ? be32(p) : le32(p); }

/* 2**e as a double, for -1022 <= e <= 1023: built from its bits, no libm needed. */
static double pow2(int e)
{
    uint64_t bits = (uint64_t)(1023 + e) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static int bit_length(uint64_t v)
{
    int n = 0;
    for (; v; v >>= 1)
        n++;
    return n;
}

/* a / b rounded once, to nearest with ties to even, as Python's int / int is.  A plain
 * (double)a / (double)b is that only when both convert exactly (up to 2**53): for larger
 * a (nanosecond ticks are about 2**60) the conversion rounds too, and two roundings can
 * differ from one in the last bit.  Otherwise: an integer quotient q = a * 2**s / b
 * with at least 55 significant bits, by long division in steps that keep the remainder
 * below 2**64 (hence b < 2**63); its last bit is set when a remainder is left, a sticky
 * bit below the rounding bit which only decides ties, so that the conversion of q
 * rounds exactly as the infinitely precise quotient would; the scaling by 2**-s is exact. */
static double div_rounded(uint64_t a, uint64_t b)
{
    if (a <= (1ull << 53) && b <= (1ull << 53))
        return (double)a / (double)b;
    int la = bit_length(a), lb = bit_length(b);
    int s = 55 + lb - la > 0 ? 55 + lb - la : 0;
    uint64_t q = a / b, r = a % b;
    for (int left = s, k; left > 0; left -= k) {
        k = left < 64 - lb ? left : 64 - lb;
        r <<= k; /* r < b < 2**lb, so r * 2**k < 2**64 */
        q = (q << k) | (r / b);
        r %= b;
    }
    if (r)
        q |= 1;
    return (double)q * pow2(-s);
}

/* The frame time of ``ticks`` on interface ``f``, bit for bit Python's
 * ``ticks / div + offset`` (a correctly rounded int / int, then a float + int that
 * rounds the offset once and the sum once).  0 when only Python can: a divisor neither
 * a power of two nor below 2**63. */
static int ticks_time(const Iface *f, uint64_t ticks, double *t)
{
    double q;
    if (f->shift >= 0)
        q = (double)ticks * pow2(-f->shift); /* one rounding; the scaling is exact */
    else if (f->shift == -1)
        q = div_rounded(ticks, f->div);
    else
        return 0;
    *t = q + (double)f->offset;
    return 1;
}

PyDoc_STRVAR(pcapng_batch_doc,
"pcapng_batch(buf, items, pos, n, first, last, t, fmt, ctx)\n"
"\n"
"Enhanced packet blocks of a pcapng section from buf[pos:], their items appended to the\n"
"list items.  n, first, last as for pcap_batch; t: the time of the last frame read.\n"
"fmt = (big_endian, the section's interfaces packed as capture._c_interface packs them,\n"
"largest believable block, Frame type); ctx as for pcap_batch.  Returns (items, pos, n,\n"
"first, last, t, frames decoded here, stop reason, bytes needed); stop reason 3: the\n"
"block at pos is for Python to read.");

static PyObject *pcapng_batch(PyObject *module, PyObject *const *argv, Py_ssize_t argc)
{
    (void)module;
    int big;
    unsigned long long limit;
    Py_buffer ifaces;
    Reading r = {0};
    if (argc != 9 || !PyList_Check(argv[1]) || !PyTuple_Check(argv[7])) {
        PyErr_SetString(PyExc_TypeError,
                        "pcapng_batch(buf, items, pos, n, first, last, t, fmt, ctx)");
        return NULL;
    }
    if (!PyArg_ParseTuple(argv[7], "py*KO", &big, &ifaces, &limit, &r.frame_type))
        return NULL;
    r.items = argv[1];
    r.t = PyFloat_AsDouble(argv[6]);
    Py_ssize_t pos = PyLong_AsSsize_t(argv[2]);
    if (PyErr_Occurred() || start_reading(&r, argv[3], argv[4], argv[5], argv[8]) < 0) {
        PyBuffer_Release(&ifaces);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(argv[0], &view, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&ifaces);
        return NULL;
    }
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len;
    uint32_t count = (uint32_t)(ifaces.len / (Py_ssize_t)sizeof(Iface));
    PyObject *result = NULL;
    unsigned long long need = 0;
    int stop = STOP_HAND;
    for (;;) {
        if (pos < 0 || end - pos < 12) {
            stop = STOP_NEED;
            need = 12;
            break;
        }
        const unsigned char *p = buf + pos;
        uint32_t btype = rd32(p, big), blen = rd32(p + 4, big);
        if (btype != 6 || blen < 32 || blen % 4 || blen > limit)
            break;
        if (end - pos < (Py_ssize_t)blen) {
            stop = STOP_NEED;
            need = blen;
            break;
        }
        uint32_t iface = rd32(p + 8, big), caplen = rd32(p + 20, big);
        if (rd32(p + blen - 4, big) != blen || iface >= count || caplen > blen - 32)
            break;
        Iface f;
        memcpy(&f, (const char *)ifaces.buf + (size_t)iface * sizeof f, sizeof f);
        double t;
        uint64_t ticks = ((uint64_t)rd32(p + 12, big) << 32) | rd32(p + 16, big);
        if (!ticks_time(&f, ticks, &t))
            break;
        if (take_frame(&r, f.linktype, p + 28, caplen, rd32(p + 24, big), t) < 0)
            goto done;
        pos += blen;
        if (r.boundary > 0 && r.n % r.boundary == 0) {
            stop = STOP_BOUNDARY;
            break;
        }
    }
    result = reading_result(&r, pos, stop, need);
done:
    PyBuffer_Release(&view);
    PyBuffer_Release(&ifaces);
    return result;
}

static PyMethodDef methods[] = {
    {"pcap_batch", (PyCFunction)(void (*)(void))pcap_batch, METH_FASTCALL, pcap_batch_doc},
    {"pcapng_batch", (PyCFunction)(void (*)(void))pcapng_batch, METH_FASTCALL,
     pcapng_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pcapsmtp._fastpcap",
    "pcap records, pcapng packet blocks and the Ethernet/IPv4/TCP fast path, in C (optional).",
    -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpcap(void) { return PyModule_Create(&module_def); }
