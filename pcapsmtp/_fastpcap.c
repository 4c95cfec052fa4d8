/* The classic-pcap record loop and the Ethernet/IPv4/TCP fast path of packets.Decoder,
 * in C.
 *
 * Why C: reading and decoding are the part of the pipeline that every worker of a
 * sharded analysis repeats for the whole file (each worker reads every frame to find
 * its own connections).  Measured on the 300k-packet benchmark capture, per worker
 * with two workers, CPU: reading every record 0.48 s and decoding it 0.80 s in Python,
 * a third of the whole run's CPU.  The Python versions (capture.CaptureReader's
 * _pcap_frames and packets.Decoder.decode) stay the reference and the fallback: this
 * module is optional (built when a C compiler is there), must give the same frames,
 * segments and counts, and tests/test_fastpcap.py holds it to that.
 *
 * One call reads records from ``buf`` at ``pos`` until it needs more bytes than the
 * buffer holds, meets a record longer than the limit, or has read a frame whose number
 * is a multiple of ``boundary`` (so that the pipeline can sweep closed connections at
 * exactly the frames it would have without this module).  For each record it appends
 * to the result list:
 *   - a Segment, when the frame is untagged Ethernet + IPv4 without options or
 *     fragmentation + a sane TCP header (packets.Decoder.decode's fast path, same tests
 *     in the same order) and its connection is in this worker's shard;
 *   - nothing, when it is such a frame of another shard's connection (counted);
 *   - a Frame otherwise, for packets.Decoder to decode in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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

/* packets.shard_hash for two IPv4 addresses (the caller reduces it modulo the count). */
static inline uint32_t shard_hash4(uint32_t src, uint32_t dst, uint32_t sport, uint32_t dport)
{
    uint32_t h = (src ^ dst ^ sport ^ dport) * 0x9E3779B1u;
    return h ^ (h >> 16);
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
    PyObject *args[13] = {NULL};
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
    for (int i = 0; i < 13; i++)
        if (args[i] == NULL)
            goto done;
    *out = PyObject_Vectorcall(ctx->segment_type, args, 13, NULL);
    ok = *out != NULL;
done:
    for (int i = 0; i < 13; i++)
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

static PyObject *optional_float(int have, double value)
{
    if (have)
        return PyFloat_FromDouble(value);
    Py_RETURN_NONE;
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
    Py_ssize_t extra, shard_index, shard_count, boundary;
    long linktype;
    unsigned long long limit;
    PyObject *segment_type, *frame_type, *names;
    if (argc != 7 || !PyTuple_Check(argv[5]) || !PyTuple_Check(argv[6])) {
        PyErr_SetString(PyExc_TypeError, "pcap_batch(buf, pos, n, first, last, fmt, ctx)");
        return NULL;
    }
    if (!PyArg_ParseTuple(argv[5], "ppnlKO", &big, &nano, &extra, &linktype, &limit,
                          &frame_type))
        return NULL;
    if (!PyArg_ParseTuple(argv[6], "nnnOO!", &shard_index, &shard_count, &boundary,
                          &segment_type, &PyDict_Type, &names))
        return NULL;
    Py_ssize_t pos = PyLong_AsSsize_t(argv[1]);
    Py_ssize_t n = PyLong_AsSsize_t(argv[2]);
    if (PyErr_Occurred())
        return NULL;
    int have_first = argv[3] != Py_None, have_last = argv[4] != Py_None;
    double first = have_first ? PyFloat_AsDouble(argv[3]) : 0.0;
    double last = have_last ? PyFloat_AsDouble(argv[4]) : 0.0;
    if (PyErr_Occurred())
        return NULL;

    Py_buffer view;
    if (PyObject_GetBuffer(argv[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len;
    Py_ssize_t hlen = 16 + extra;
    double div = nano ? 1e9 : 1e6;
    Context ctx = {shard_index, shard_count, segment_type, names};
    PyObject *items = PyList_New(0);
    if (items == NULL)
        goto fail;
    Py_ssize_t decoded = 0;
    unsigned long long need = 0;
    int stop;
    double t = 0.0;
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
        n++;
        t = (double)sec + (double)frac / div; /* as Python's sec + frac / div */
        if (!have_first) {
            first = last = t;
            have_first = have_last = 1;
        } else if (t > last) {
            last = t;
        } else if (t < first) {
            first = t;
        }
        const unsigned char *d = p + hlen;
        PyObject *item = NULL;
        int got = linktype == 1 ? fast_segment(&ctx, d, caplen, n, t, &item) : 0;
        if (got < 0)
            goto fail;
        if (got)
            decoded++;
        else
            item = make_frame(frame_type, n, t, linktype, d, caplen, origlen);
        if (item != NULL) {
            int appended = PyList_Append(items, item);
            Py_DECREF(item);
            if (appended < 0)
                goto fail;
        } else if (!got) {
            goto fail;
        }
        pos += hlen + caplen;
        if (boundary > 0 && n % boundary == 0) {
            stop = STOP_BOUNDARY;
            break;
        }
    }
    PyBuffer_Release(&view);
    PyObject *first_obj = optional_float(have_first, first);
    PyObject *last_obj = optional_float(have_last, last);
    if (first_obj == NULL || last_obj == NULL) {
        Py_XDECREF(first_obj);
        Py_XDECREF(last_obj);
        Py_DECREF(items);
        return NULL;
    }
    return Py_BuildValue("(NnnNNdniK)", items, pos, n, first_obj, last_obj, t, decoded, stop,
                         need);
fail:
    PyBuffer_Release(&view);
    Py_XDECREF(items);
    return NULL;
}

static PyMethodDef methods[] = {
    {"pcap_batch", (PyCFunction)(void (*)(void))pcap_batch, METH_FASTCALL, pcap_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pcapsmtp._fastpcap",
    "Classic pcap records and the Ethernet/IPv4/TCP fast path, in C (optional).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpcap(void) { return PyModule_Create(&module_def); }
