/* The UDP hit path in C: the fast path's replayed replies answered without Python.
 *
 * HitTable   the UDP templates of one FastTable (dnsfailover/server/fast.py), copied into C
 *            memory: key = (question without case, keyed flags, EDNS variant), value = the
 *            reply the full path gave, or one reply per choice of a weighted set with the
 *            Cycle that picks among them.
 * Cycle      a weighted set's smooth weighted round-robin, shared by this code and Python
 *            (weighted.Rotor.pick), so the C hits and the full path take one rotation.
 * UdpLoop    one UDP socket's loop: recvmmsg, answer every hit from the current table,
 *            sendmmsg the replies, all without the GIL; it returns to Python only with a
 *            batch's misses (and the Python object set with the table, which answers them).
 *
 * A reply made here is byte for byte what replay.patch/echo make from the same template
 * (tests/test_hits.py checks it against the full path with hypothesis); anything else is a
 * miss.  Tables, entries and cycles are reference counted with C atomics, not Python's, so
 * the loop may drop the last reference to a table a publish replaced without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#define HEADER_LEN 12
#define MAX_QUESTION (255 + 4)
#define MIN_UDP_PAYLOAD 512
#define MAX_REPLY 0xFFFF
#define HITS_MAX_BATCH 1024
#define FLAG_RD 0x0100
#define KEYED_FLAGS 0x0030 /* AD | CD */
#define OPT_TYPE 41
#define ECS_CODE 8
#define EDNS_DO 0x8000
#define LARGE 2 /* added to an EDNS variant when the payload is at least the server's */

int send_all(int fd, struct mmsghdr *msgs, unsigned int count, int *first_error);
PyObject *format_host(const struct sockaddr_storage *ss); /* _mmsg.c */

static uint64_t hash_seed;

/* ---------------------------------------------------------------- cycle */

typedef struct cycle {
    atomic_long refs;
    atomic_size_t turn;
    size_t size;
    uint32_t order[];
} cycle;

static void
cycle_decref(cycle *c)
{
    if (c != NULL && atomic_fetch_sub(&c->refs, 1) == 1)
        free(c);
}

static inline uint32_t
cycle_next(cycle *c)
{
    return c->order[atomic_fetch_add_explicit(&c->turn, 1, memory_order_relaxed) % c->size];
}

typedef struct {
    PyObject_HEAD
    cycle *c;
} CycleObject;

static int
Cycle_init(CycleObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"order", NULL};
    PyObject *order;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Cycle", keywords, &order))
        return -1;
    PyObject *seq = PySequence_Fast(order, "order must be a sequence of ints");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "order must not be empty");
        return -1;
    }
    cycle *c = malloc(sizeof(cycle) + (size_t)n * sizeof(uint32_t));
    if (c == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    atomic_init(&c->refs, 1);
    atomic_init(&c->turn, 0);
    c->size = (size_t)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v < 0 || v > 0xFFFF) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "an index of order is out of range");
            free(c);
            Py_DECREF(seq);
            return -1;
        }
        c->order[i] = (uint32_t)v;
    }
    Py_DECREF(seq);
    cycle_decref(self->c);
    self->c = c;
    return 0;
}

static void
Cycle_dealloc(CycleObject *self)
{
    cycle_decref(self->c);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Cycle_pick(CycleObject *self, PyObject *unused)
{
    if (self->c == NULL) {
        PyErr_SetString(PyExc_ValueError, "Cycle not initialised");
        return NULL;
    }
    return PyLong_FromUnsignedLong(cycle_next(self->c));
}

static PyMethodDef Cycle_methods[] = {
    {"pick", (PyCFunction)Cycle_pick, METH_NOARGS,
     "pick() -> int\n\nThe next turn's index; every call advances the rotation."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CycleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dnsfailover.server._mmsg.Cycle",
    .tp_doc = "Cycle(order): a rotation through `order` shared by Python and the C hit path.",
    .tp_basicsize = sizeof(CycleObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Cycle_init,
    .tp_dealloc = (destructor)Cycle_dealloc,
    .tp_methods = Cycle_methods,
};

/* ---------------------------------------------------------------- entries and tables */

typedef struct {
    uint32_t len;
    const unsigned char *data;
} template_t;

typedef struct entry {
    atomic_long refs;
    uint64_t hash;
    uint16_t keylen;
    uint16_t keyed;
    uint8_t variant;
    uint8_t opt_end; /* every template ends in a plain OPT (an ECS option can be echoed) */
    uint8_t carry;   /* its name's own records alone make it (FastTable._carry) */
    uint32_t count;
    uint32_t maxlen;
    cycle *cycle; /* NULL: one template */
    const unsigned char *key;
    template_t templates[];
} entry;

static void
entry_decref(entry *e)
{
    if (e != NULL && atomic_fetch_sub(&e->refs, 1) == 1) {
        cycle_decref(e->cycle);
        free(e);
    }
}

typedef struct table {
    atomic_long refs;
    pthread_mutex_t lock;
    size_t cap; /* a power of two, or 0 */
    size_t used;
    entry **slots;
    int max_udp_payload;
    int tcp; /* TCP templates: no payload size in the key, no 512-byte rule for the echo */
} table;

static table *
table_new(int max_udp_payload, int tcp)
{
    table *t = calloc(1, sizeof(table));
    if (t == NULL)
        return NULL;
    atomic_init(&t->refs, 1);
    pthread_mutex_init(&t->lock, NULL);
    t->max_udp_payload = max_udp_payload;
    t->tcp = tcp;
    return t;
}

static void
table_empty(table *t)
{
    for (size_t i = 0; i < t->cap; i++)
        entry_decref(t->slots[i]);
    free(t->slots);
    t->slots = NULL;
    t->cap = t->used = 0;
}

static void
table_decref(table *t)
{
    if (t != NULL && atomic_fetch_sub(&t->refs, 1) == 1) {
        table_empty(t);
        pthread_mutex_destroy(&t->lock);
        free(t);
    }
}

static inline uint64_t
key_hash(const unsigned char *lowered, size_t len, unsigned keyed, unsigned variant)
{
    /* FNV-1a over the key, seeded per process, then mixed (splitmix64's finaliser) */
    uint64_t h = hash_seed ^ 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ lowered[i]) * 0x100000001b3ULL;
    h = (h ^ (keyed << 8 | variant)) * 0x100000001b3ULL;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

/* The slot of the key, or of the empty slot where it would go (cap > 0). */
static size_t
table_slot(const table *t, uint64_t hash, const unsigned char *key, size_t len, unsigned keyed,
           unsigned variant)
{
    size_t mask = t->cap - 1, i = (size_t)hash & mask;
    for (;;) {
        const entry *e = t->slots[i];
        if (e == NULL
            || (e->hash == hash && e->keylen == len && e->keyed == keyed
                && e->variant == variant && memcmp(e->key, key, len) == 0))
            return i;
        i = (i + 1) & mask;
    }
}

/* Puts `e` (taking the caller's reference), replacing an entry of the same key; 0 or -1. */
static int
table_put(table *t, entry *e)
{
    if ((t->used + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        entry **slots = calloc(cap, sizeof(entry *));
        if (slots == NULL)
            return -1;
        entry **old = t->slots;
        size_t old_cap = t->cap;
        t->slots = slots;
        t->cap = cap;
        for (size_t i = 0; i < old_cap; i++) {
            entry *x = old[i];
            if (x != NULL)
                slots[table_slot(t, x->hash, x->key, x->keylen, x->keyed, x->variant)] = x;
        }
        free(old);
    }
    size_t i = table_slot(t, e->hash, e->key, e->keylen, e->keyed, e->variant);
    if (t->slots[i] == NULL)
        t->used++;
    else
        entry_decref(t->slots[i]);
    t->slots[i] = e;
    return 0;
}

static const entry *
table_get(const table *t, const unsigned char *key, size_t len, unsigned keyed, unsigned variant)
{
    if (t->cap == 0)
        return NULL;
    uint64_t hash = key_hash(key, len, keyed, variant);
    return t->slots[table_slot(t, hash, key, len, keyed, variant)];
}

/* ---------------------------------------------------------------- the hit path */

static inline unsigned
u16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* Whether data[start:end] is exactly one plain ECS option (replay.plain_ecs). */
static int
plain_ecs(const unsigned char *data, size_t start, size_t end)
{
    if (end - start < 8)
        return 0;
    const unsigned char *o = data + start;
    unsigned code = u16(o), length = u16(o + 2), family = u16(o + 4), source = o[6];
    size_t address = end - start - 8;
    if (code != ECS_CODE || length != address + 4 || o[7] != 0)
        return 0;
    if ((family != 1 && family != 2) || source > (family == 1 ? 32u : 128u))
        return 0;
    if (address != (source + 7) / 8)
        return 0;
    return !(source % 8 && (o[end - start - 1] & (0xFF >> (source % 8))));
}

/* The reply to the query `data` from `t`, written to `out` (MAX_REPLY bytes): its length,
 * or 0 for a miss.  The caller holds t->lock. */
static size_t
hit(const table *t, const unsigned char *data, size_t end, unsigned char *out)
{
    if (t == NULL || t->used == 0 || end < HEADER_LEN + 5)
        return 0;
    unsigned flags = u16(data + 2), qd = u16(data + 4), an = u16(data + 6),
             ns = u16(data + 8), ar = u16(data + 10);
    if ((flags & ~(unsigned)(FLAG_RD | KEYED_FLAGS)) || qd != 1 || an || ns || ar > 1)
        return 0;
    size_t pos = HEADER_LEN;
    for (;;) {
        if (pos >= end)
            return 0;
        unsigned length = data[pos];
        if (length == 0) {
            pos += 1;
            break;
        }
        if (length > 63)
            return 0;
        pos += length + 1;
    }
    if (pos - HEADER_LEN > 255 || pos + 4 > end || u16(data + pos + 2) != 1)
        return 0;
    pos += 4;
    size_t qend = pos, option_len = 0;
    unsigned variant = 0;
    if (ar == 0) {
        if (pos != end)
            return 0;
    } else {
        if (end - pos < 11 || data[pos] != 0)
            return 0;
        const unsigned char *opt = data + pos + 1;
        unsigned rtype = u16(opt), payload = u16(opt + 2), z = u16(opt + 6),
                 rdlen = u16(opt + 8);
        if (rtype != OPT_TYPE || opt[4] || opt[5] || (z & ~(unsigned)EDNS_DO)
            || pos + 11 + rdlen != end)
            return 0;
        if (rdlen && !plain_ecs(data, pos + 11, end))
            return 0;
        option_len = rdlen;
        variant = (z & EDNS_DO) ? 2 : 1;
        if (!t->tcp && (int)payload >= t->max_udp_payload)
            variant += LARGE;
    }

    unsigned char key[MAX_QUESTION];
    size_t keylen = qend - HEADER_LEN;
    for (size_t i = 0; i < keylen; i++) {
        unsigned char c = data[HEADER_LEN + i];
        key[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    const entry *e = table_get(t, key, keylen, flags & KEYED_FLAGS, variant);
    if (e == NULL)
        return 0;

    /* replay.echo: the option goes into the template's plain OPT, the last record, within a
     * plain UDP reply; checked before a weighted set turns (a miss must not take a turn) */
    if (option_len && (!e->opt_end || (!t->tcp && e->maxlen + option_len > MIN_UDP_PAYLOAD)))
        return 0;
    const template_t *tp = &e->templates[e->cycle ? cycle_next(e->cycle) % e->count : 0];
    const unsigned char *tmpl = tp->data;
    size_t len = tp->len; /* >= qend: `put` takes only replies to the question */
    /* replay.patch: the query's ID, RD and question over the template */
    out[0] = data[0];
    out[1] = data[1];
    out[2] = tmpl[2] | (data[2] & 1);
    memcpy(out + 3, tmpl + 3, HEADER_LEN - 3);
    memcpy(out + HEADER_LEN, data + HEADER_LEN, keylen);
    memcpy(out + qend, tmpl + qend, len - qend);
    if (option_len) {
        out[len - 2] = (unsigned char)(option_len >> 8);
        out[len - 1] = (unsigned char)option_len;
        memcpy(out + len, data + end - option_len, option_len);
        len += option_len;
    }
    return len;
}

/* ---------------------------------------------------------------- HitTable */

typedef struct {
    PyObject_HEAD
    table *t;
} HitTableObject;

static PyTypeObject HitTableType;

static int
HitTable_init(HitTableObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"max_udp_payload", "tcp", NULL};
    int max_udp_payload, tcp = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|p:HitTable", keywords, &max_udp_payload,
                                     &tcp))
        return -1;
    if (max_udp_payload < MIN_UDP_PAYLOAD || max_udp_payload > MAX_REPLY) {
        PyErr_SetString(PyExc_ValueError, "max_udp_payload must be 512 to 65535");
        return -1;
    }
    table *t = table_new(max_udp_payload, tcp);
    if (t == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    table_decref(self->t);
    self->t = t;
    return 0;
}

static void
HitTable_dealloc(HitTableObject *self)
{
    table_decref(self->t);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
ready(HitTableObject *self)
{
    if (self->t != NULL)
        return 1;
    PyErr_SetString(PyExc_ValueError, "HitTable not initialised");
    return 0;
}

static PyObject *
HitTable_put(HitTableObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"question", "keyed", "variant", "templates", "cycle", "carry",
                               NULL};
    Py_buffer question;
    int keyed, variant, carry = 0;
    PyObject *templates, *cycle_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*iiO|Op:put", keywords, &question, &keyed,
                                     &variant, &templates, &cycle_obj, &carry))
        return NULL;
    PyObject *result = NULL, *seq = NULL;
    if (!ready(self))
        goto done;
    if (question.len < 5 || question.len > MAX_QUESTION || keyed & ~KEYED_FLAGS || variant < 0
        || variant > 4) {
        PyErr_SetString(PyExc_ValueError, "not a key of the table");
        goto done;
    }
    cycle *c = NULL;
    if (cycle_obj != Py_None) {
        if (!PyObject_TypeCheck(cycle_obj, &CycleType) || ((CycleObject *)cycle_obj)->c == NULL) {
            PyErr_SetString(PyExc_TypeError, "cycle must be a Cycle or None");
            goto done;
        }
        c = ((CycleObject *)cycle_obj)->c;
    }
    seq = PySequence_Fast(templates, "templates must be a sequence of bytes");
    if (seq == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || (c == NULL && n != 1)) {
        PyErr_SetString(PyExc_ValueError, "one template, or one per choice with a cycle");
        goto done;
    }
    size_t size = sizeof(entry) + (size_t)n * sizeof(template_t) + (size_t)question.len;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) < HEADER_LEN + question.len
            || PyBytes_GET_SIZE(item) > MAX_REPLY) {
            PyErr_SetString(PyExc_ValueError, "a template must be a reply to the question");
            goto done;
        }
        size += (size_t)PyBytes_GET_SIZE(item);
    }
    if (c != NULL) {
        for (size_t i = 0; i < c->size; i++)
            if (c->order[i] >= (uint32_t)n) {
                PyErr_SetString(PyExc_ValueError, "the cycle picks past the templates");
                goto done;
            }
    }
    entry *e = malloc(size);
    if (e == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *p = (unsigned char *)&e->templates[n];
    memcpy(p, question.buf, (size_t)question.len);
    for (Py_ssize_t i = 0; i < question.len; i++)
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] += 32;
    atomic_init(&e->refs, 1);
    e->key = p;
    e->keylen = (uint16_t)question.len;
    e->keyed = (uint16_t)keyed;
    e->variant = (uint8_t)variant;
    e->hash = key_hash(p, (size_t)question.len, (unsigned)keyed, (unsigned)variant);
    e->count = (uint32_t)n;
    e->maxlen = 0;
    e->opt_end = 1;
    e->carry = (uint8_t)carry;
    p += question.len;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        size_t len = (size_t)PyBytes_GET_SIZE(item);
        memcpy(p, PyBytes_AS_STRING(item), len);
        e->templates[i].data = p;
        e->templates[i].len = (uint32_t)len;
        if (len > e->maxlen)
            e->maxlen = (uint32_t)len;
        if (len < HEADER_LEN + 11 || p[len - 11] != 0 || p[len - 10] != 0
            || p[len - 9] != OPT_TYPE || p[len - 2] != 0 || p[len - 1] != 0)
            e->opt_end = 0;
        p += len;
    }
    if (c != NULL)
        atomic_fetch_add(&c->refs, 1);
    e->cycle = c;
    pthread_mutex_lock(&self->t->lock);
    int failed = table_put(self->t, e);
    pthread_mutex_unlock(&self->t->lock);
    if (failed) {
        entry_decref(e);
        PyErr_NoMemory();
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(seq);
    PyBuffer_Release(&question);
    return result;
}

static PyObject *
HitTable_clear(HitTableObject *self, PyObject *unused)
{
    if (!ready(self))
        return NULL;
    pthread_mutex_lock(&self->t->lock);
    table_empty(self->t);
    pthread_mutex_unlock(&self->t->lock);
    Py_RETURN_NONE;
}

/* carried(names): a new table of this one's carry entries (not weighted) whose question's
 * name is not one of `names` (lower-case wire names): what a publish that changed those
 * names keeps.  Shared, not copied.  An entry put after the caller took its own copy is
 * judged by the same rule, so nothing the publish changed is ever carried. */
static PyObject *
HitTable_carried(HitTableObject *self, PyObject *names)
{
    if (!ready(self))
        return NULL;
    PyObject *seq = PySequence_Fast(names, "names must be a sequence of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap *= 2;
    /* an open-addressing set of the names: (hash, bytes) */
    uint64_t *hashes = calloc(cap, sizeof(uint64_t));
    PyObject **found = calloc(cap, sizeof(PyObject *));
    HitTableObject *copy = NULL;
    if (hashes == NULL || found == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *name = PySequence_Fast_GET_ITEM(seq, k);
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be bytes");
            goto done;
        }
        const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(name);
        uint64_t h = key_hash(b, (size_t)PyBytes_GET_SIZE(name), 0, 0);
        size_t i = (size_t)h & (cap - 1);
        while (found[i] != NULL)
            i = (i + 1) & (cap - 1);
        hashes[i] = h;
        found[i] = name;
    }
    copy = PyObject_New(HitTableObject, &HitTableType);
    if (copy == NULL)
        goto done;
    copy->t = table_new(self->t->max_udp_payload, self->t->tcp);
    if (copy->t == NULL) {
        Py_CLEAR(copy);
        PyErr_NoMemory();
        goto done;
    }
    pthread_mutex_lock(&self->t->lock);
    size_t cap_copy = 64; /* sized once: no rehash while copying */
    while (cap_copy < (self->t->used + 1) * 2)
        cap_copy *= 2;
    copy->t->slots = calloc(cap_copy, sizeof(entry *));
    copy->t->cap = copy->t->slots ? cap_copy : 0;
    for (size_t s_i = 0; s_i < self->t->cap; s_i++) {
        entry *e = self->t->slots[s_i];
        if (e == NULL || !e->carry || e->cycle != NULL)
            continue;
        size_t len = (size_t)e->keylen - 4; /* the name: the question less type and class */
        uint64_t h = key_hash(e->key, len, 0, 0);
        int changed = 0;
        for (size_t i = (size_t)h & (cap - 1); found[i] != NULL; i = (i + 1) & (cap - 1))
            if (hashes[i] == h && (size_t)PyBytes_GET_SIZE(found[i]) == len
                && memcmp(PyBytes_AS_STRING(found[i]), e->key, len) == 0) {
                changed = 1;
                break;
            }
        if (changed)
            continue;
        atomic_fetch_add(&e->refs, 1);
        if (table_put(copy->t, e) < 0) {
            entry_decref(e);
            pthread_mutex_unlock(&self->t->lock);
            Py_CLEAR(copy);
            PyErr_NoMemory();
            goto done;
        }
    }
    pthread_mutex_unlock(&self->t->lock);
done:
    free(hashes);
    free(found);
    Py_DECREF(seq);
    return (PyObject *)copy;
}

/* reply(data) -> bytes | None: the hit path for one query (what UdpLoop sends for it). */
static PyObject *
HitTable_reply(HitTableObject *self, PyObject *args)
{
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*:reply", &data))
        return NULL;
    if (!ready(self)) {
        PyBuffer_Release(&data);
        return NULL;
    }
    unsigned char *out = PyMem_Malloc(MAX_REPLY);
    if (out == NULL) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    size_t len = 0;
    if (data.len <= MAX_REPLY) {
        pthread_mutex_lock(&self->t->lock);
        len = hit(self->t, data.buf, (size_t)data.len, out);
        pthread_mutex_unlock(&self->t->lock);
    }
    PyObject *result = len ? PyBytes_FromStringAndSize((char *)out, (Py_ssize_t)len)
                           : Py_NewRef(Py_None);
    PyMem_Free(out);
    PyBuffer_Release(&data);
    return result;
}

static Py_ssize_t
HitTable_len(HitTableObject *self)
{
    if (!ready(self))
        return -1;
    pthread_mutex_lock(&self->t->lock);
    size_t used = self->t->used;
    pthread_mutex_unlock(&self->t->lock);
    return (Py_ssize_t)used;
}

static PyMethodDef HitTable_methods[] = {
    {"put", (PyCFunction)(void (*)(void))HitTable_put, METH_VARARGS | METH_KEYWORDS,
     "put(question, keyed, variant, templates, cycle=None, carry=False)\n\n"
     "Answer the key with its template (or one per choice of `cycle`)."},
    {"clear", (PyCFunction)HitTable_clear, METH_NOARGS, "clear(): forget every template."},
    {"carried", (PyCFunction)HitTable_carried, METH_O,
     "carried(names) -> HitTable\n\n"
     "A table of this one's carry entries, but weighted ones and those of `names`."},
    {"reply", (PyCFunction)HitTable_reply, METH_VARARGS,
     "reply(data) -> bytes | None\n\nThe hit path's reply to one UDP query, or None."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods HitTable_as_sequence = {.sq_length = (lenfunc)HitTable_len};

static PyTypeObject HitTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dnsfailover.server._mmsg.HitTable",
    .tp_doc = "HitTable(max_udp_payload, tcp=False): fast-path templates in C memory.",
    .tp_basicsize = sizeof(HitTableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HitTable_init,
    .tp_dealloc = (destructor)HitTable_dealloc,
    .tp_methods = HitTable_methods,
    .tp_as_sequence = &HitTable_as_sequence,
};

/* ---------------------------------------------------------------- UdpLoop */

typedef struct {
    PyObject_HEAD
    int fd;
    unsigned int batch;
    size_t bufsize;
    struct mmsghdr *msgs;
    struct iovec *iovs;
    struct sockaddr_storage *addrs;
    unsigned char *bufs;
    struct mmsghdr *outs;
    struct iovec *out_iovs;
    unsigned char *replies;
    unsigned int *missed;
    pthread_mutex_t lock; /* current and owner */
    table *current;
    PyObject *owner;
    atomic_int stopping;
    atomic_int running;
    _Atomic uint64_t counts[16];
} UdpLoopObject;

static void
UdpLoop_free_buffers(UdpLoopObject *self)
{
    PyMem_RawFree(self->msgs);
    PyMem_RawFree(self->iovs);
    PyMem_RawFree(self->addrs);
    PyMem_RawFree(self->bufs);
    PyMem_RawFree(self->outs);
    PyMem_RawFree(self->out_iovs);
    PyMem_RawFree(self->replies);
    PyMem_RawFree(self->missed);
    self->msgs = NULL;
    self->iovs = NULL;
    self->addrs = NULL;
    self->bufs = NULL;
    self->outs = NULL;
    self->out_iovs = NULL;
    self->replies = NULL;
    self->missed = NULL;
}

static PyObject *
UdpLoop_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    UdpLoopObject *self = (UdpLoopObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        pthread_mutex_init(&self->lock, NULL);
        self->owner = Py_NewRef(Py_None);
        self->fd = -1;
    }
    return (PyObject *)self;
}

static int
UdpLoop_init(UdpLoopObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "max_messages", "bufsize", NULL};
    int fd, batch, bufsize = MAX_REPLY;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ii|i:UdpLoop", keywords, &fd, &batch,
                                     &bufsize))
        return -1;
    if (atomic_load(&self->running)) {
        PyErr_SetString(PyExc_RuntimeError, "UdpLoop is running");
        return -1;
    }
    if (batch < 1 || batch > HITS_MAX_BATCH || bufsize < 1 || bufsize > MAX_REPLY) {
        PyErr_SetString(PyExc_ValueError, "max_messages 1 to 1024, bufsize 1 to 65535");
        return -1;
    }
    UdpLoop_free_buffers(self);
    size_t n = (size_t)batch;
    self->fd = fd;
    self->batch = (unsigned int)batch;
    self->bufsize = (size_t)bufsize;
    self->msgs = PyMem_RawCalloc(n, sizeof(struct mmsghdr));
    self->iovs = PyMem_RawCalloc(n, sizeof(struct iovec));
    self->addrs = PyMem_RawCalloc(n, sizeof(struct sockaddr_storage));
    self->bufs = PyMem_RawMalloc(n * (size_t)bufsize);
    self->outs = PyMem_RawCalloc(n, sizeof(struct mmsghdr));
    self->out_iovs = PyMem_RawCalloc(n, sizeof(struct iovec));
    self->replies = PyMem_RawMalloc(n * MAX_REPLY);
    self->missed = PyMem_RawCalloc(n, sizeof(unsigned int));
    if (!self->msgs || !self->iovs || !self->addrs || !self->bufs || !self->outs
        || !self->out_iovs || !self->replies || !self->missed) {
        UdpLoop_free_buffers(self);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
UdpLoop_dealloc(UdpLoopObject *self)
{
    UdpLoop_free_buffers(self);
    table_decref(self->current);
    Py_XDECREF(self->owner);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
UdpLoop_set_table(UdpLoopObject *self, PyObject *args)
{
    PyObject *hits, *owner;
    if (!PyArg_ParseTuple(args, "OO:set_table", &hits, &owner))
        return NULL;
    table *t = NULL;
    if (hits != Py_None) {
        if (!PyObject_TypeCheck(hits, &HitTableType) || !ready((HitTableObject *)hits)
            || ((HitTableObject *)hits)->t->tcp) {
            PyErr_SetString(PyExc_TypeError, "hits must be a UDP HitTable or None");
            return NULL;
        }
        t = ((HitTableObject *)hits)->t;
        atomic_fetch_add(&t->refs, 1);
    }
    pthread_mutex_lock(&self->lock);
    table *old = self->current;
    PyObject *old_owner = self->owner;
    self->current = t;
    self->owner = Py_NewRef(owner);
    pthread_mutex_unlock(&self->lock);
    table_decref(old);
    Py_DECREF(old_owner);
    Py_RETURN_NONE;
}

/* run() -> (owner, misses): answers hits until a batch has a miss, then returns those
 * datagrams as (data, host, sockaddr) with the object set with the table that answered the
 * batch (the one to answer them); (owner, []) once stopped or on a non-blocking socket. */
static PyObject *
UdpLoop_run(UdpLoopObject *self, PyObject *unused)
{
    if (self->msgs == NULL) {
        PyErr_SetString(PyExc_ValueError, "UdpLoop not initialised");
        return NULL;
    }
    int expected = 0;
    if (!atomic_compare_exchange_strong(&self->running, &expected, 1)) {
        PyErr_SetString(PyExc_RuntimeError, "UdpLoop.run is running on another thread");
        return NULL;
    }
    unsigned int n = self->batch, got = 0, nmiss = 0;
    int err = 0;
    table *used = NULL;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        for (unsigned int i = 0; i < n; i++) {
            self->iovs[i].iov_base = self->bufs + (size_t)i * self->bufsize;
            self->iovs[i].iov_len = self->bufsize;
            self->msgs[i].msg_hdr.msg_iov = &self->iovs[i];
            self->msgs[i].msg_hdr.msg_iovlen = 1;
            self->msgs[i].msg_hdr.msg_name = &self->addrs[i];
            self->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
            self->msgs[i].msg_hdr.msg_flags = 0;
        }
        int r = recvmmsg(self->fd, self->msgs, n, MSG_WAITFORONE, NULL);
        if (r < 0) {
            if (errno == EINTR && !atomic_load(&self->stopping))
                continue;
            err = (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : errno;
            got = 0;
            break;
        }
        got = (unsigned int)r;
        if (got == 0 || atomic_load(&self->stopping)) {
            got = 0;
            break;
        }
        pthread_mutex_lock(&self->lock);
        table *t = self->current;
        if (t != NULL)
            atomic_fetch_add(&t->refs, 1);
        pthread_mutex_unlock(&self->lock);
        unsigned int nhit = 0;
        nmiss = 0;
        if (t != NULL)
            pthread_mutex_lock(&t->lock);
        for (unsigned int i = 0; i < got; i++) {
            struct msghdr *hdr = &self->msgs[i].msg_hdr;
            if (hdr->msg_flags & MSG_TRUNC)
                continue; /* longer than bufsize: not a query we could answer */
            unsigned char *out = self->replies + (size_t)nhit * MAX_REPLY;
            size_t len = hit(t, self->bufs + (size_t)i * self->bufsize, self->msgs[i].msg_len, out);
            if (len == 0) {
                self->missed[nmiss++] = i;
                continue;
            }
            atomic_fetch_add_explicit(&self->counts[out[3] & 0xF], 1, memory_order_relaxed);
            self->out_iovs[nhit].iov_base = out;
            self->out_iovs[nhit].iov_len = len;
            struct msghdr *o = &self->outs[nhit].msg_hdr;
            memset(o, 0, sizeof(*o));
            o->msg_iov = &self->out_iovs[nhit];
            o->msg_iovlen = 1;
            o->msg_name = hdr->msg_name;
            o->msg_namelen = hdr->msg_namelen;
            nhit++;
        }
        if (t != NULL)
            pthread_mutex_unlock(&t->lock);
        if (nhit) {
            int first_error = 0;
            send_all(self->fd, self->outs, nhit, &first_error);
        }
        if (nmiss) {
            used = t; /* keep it until the owner is read: same table, same owner */
            break;
        }
        table_decref(t);
        if (atomic_load(&self->stopping)) {
            got = 0;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    atomic_store(&self->running, 0);
    if (err) {
        table_decref(used);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* The owner of the table that answered this batch, if it is still the current one: else
     * the current one's, whose snapshot is newer (a client never sees an older answer). */
    pthread_mutex_lock(&self->lock);
    PyObject *owner = Py_NewRef(self->owner);
    pthread_mutex_unlock(&self->lock);
    table_decref(used);
    PyObject *misses = PyList_New(0);
    if (misses == NULL) {
        Py_DECREF(owner);
        return NULL;
    }
    for (unsigned int k = 0; got && k < nmiss; k++) {
        unsigned int i = self->missed[k];
        const struct msghdr *hdr = &self->msgs[i].msg_hdr;
        PyObject *item = Py_BuildValue(
            "(y#Ny#)", (const char *)self->bufs + (size_t)i * self->bufsize,
            (Py_ssize_t)self->msgs[i].msg_len, format_host(&self->addrs[i]),
            (const char *)&self->addrs[i], (Py_ssize_t)hdr->msg_namelen);
        if (item == NULL || PyList_Append(misses, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(misses);
            Py_DECREF(owner);
            return NULL;
        }
        Py_DECREF(item);
    }
    return Py_BuildValue("(NN)", owner, misses);
}

static PyObject *
UdpLoop_stop(UdpLoopObject *self, PyObject *unused)
{
    atomic_store(&self->stopping, 1);
    Py_RETURN_NONE;
}

static PyObject *
UdpLoop_counts(UdpLoopObject *self, PyObject *unused)
{
    PyObject *result = PyList_New(16);
    if (result == NULL)
        return NULL;
    for (int i = 0; i < 16; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(atomic_load(&self->counts[i]));
        if (v == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyList_SET_ITEM(result, i, v);
    }
    return result;
}

static PyMethodDef UdpLoop_methods[] = {
    {"set_table", (PyCFunction)UdpLoop_set_table, METH_VARARGS,
     "set_table(hits, owner)\n\nAnswer from `hits` (None: nothing) from the next batch on; "
     "run() returns `owner` with the misses."},
    {"run", (PyCFunction)UdpLoop_run, METH_NOARGS,
     "run() -> (owner, misses)\n\nAnswer hits until a batch has misses; return them."},
    {"stop", (PyCFunction)UdpLoop_stop, METH_NOARGS,
     "stop(): run() returns after its current wait (shut the socket down to end it)."},
    {"counts", (PyCFunction)UdpLoop_counts, METH_NOARGS,
     "counts() -> list[int]\n\nReplies sent by the hit path, by the header's rcode."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject UdpLoopType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dnsfailover.server._mmsg.UdpLoop",
    .tp_doc = "UdpLoop(fd, max_messages, bufsize=65535): a UDP socket answered by the C hit "
              "path.",
    .tp_basicsize = sizeof(UdpLoopObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = UdpLoop_new,
    .tp_init = (initproc)UdpLoop_init,
    .tp_dealloc = (destructor)UdpLoop_dealloc,
    .tp_methods = UdpLoop_methods,
};

int
hits_register(PyObject *module)
{
    if (getrandom(&hash_seed, sizeof(hash_seed), 0) != sizeof(hash_seed))
        hash_seed = (uint64_t)(uintptr_t)&hash_seed ^ 0x9e3779b97f4a7c15ULL;
    PyTypeObject *types[] = {&CycleType, &HitTableType, &UdpLoopType};
    const char *names[] = {"Cycle", "HitTable", "UdpLoop"};
    for (int i = 0; i < 3; i++) {
        if (PyType_Ready(types[i]) < 0)
            return -1;
        if (PyModule_AddObjectRef(module, names[i], (PyObject *)types[i]) < 0)
            return -1;
    }
    return 0;
}
