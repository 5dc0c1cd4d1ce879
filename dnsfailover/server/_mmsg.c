/* Batched UDP receive and send for the DNS server's UDP thread: recvmmsg(2) and sendmmsg(2).
 *
 * recv_batch(fd, max_messages, bufsize=4096) -> list[(data, host, sockaddr)]
 * send_batch(fd, [(data, sockaddr), ...]) -> int
 *
 * ``sockaddr`` is the peer's raw struct sockaddr (an opaque bytes object) that send_batch
 * takes back as it is; ``host`` is its address as text, for rate limiting.  Both calls release
 * the GIL around the system call.  Linux only.
 */
#define PY_SSIZE_T_CLEAN  /* Python.h defines _GNU_SOURCE, for recvmmsg and sendmmsg */
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BATCH 1024

/* The address of a sockaddr as text ("" for another family). */
PyObject *
format_host(const struct sockaddr_storage *ss)
{
    char text[INET6_ADDRSTRLEN];
    const void *addr;
    if (ss->ss_family == AF_INET)
        addr = &((const struct sockaddr_in *)ss)->sin_addr;
    else if (ss->ss_family == AF_INET6)
        addr = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    else
        return PyUnicode_FromString("");
    if (inet_ntop(ss->ss_family, addr, text, sizeof(text)) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyUnicode_FromString(text);
}

static PyObject *
recv_batch(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "max_messages", "bufsize", NULL};
    int fd, max_messages, bufsize = 4096;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ii|i:recv_batch", keywords, &fd,
                                     &max_messages, &bufsize))
        return NULL;
    if (max_messages < 1 || max_messages > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "max_messages must be 1 to %d", MAX_BATCH);
        return NULL;
    }
    if (bufsize < 1 || bufsize > 0x10000) {
        PyErr_SetString(PyExc_ValueError, "bufsize must be 1 to 65536");
        return NULL;
    }

    size_t n = (size_t)max_messages;
    struct mmsghdr *msgs = PyMem_Calloc(n, sizeof(*msgs));
    struct iovec *iovs = PyMem_Malloc(n * sizeof(*iovs));
    struct sockaddr_storage *addrs = PyMem_Malloc(n * sizeof(*addrs));
    char *bufs = PyMem_Malloc(n * (size_t)bufsize);
    PyObject *result = NULL;
    if (msgs == NULL || iovs == NULL || addrs == NULL || bufs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        iovs[i].iov_base = bufs + i * (size_t)bufsize;
        iovs[i].iov_len = (size_t)bufsize;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
    }

    int got, err;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        got = recvmmsg(fd, msgs, (unsigned int)n, MSG_WAITFORONE, NULL);
        err = errno;
        Py_END_ALLOW_THREADS
        if (got >= 0)
            break;
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0)
                goto done;
            continue;
        }
        if (err == EAGAIN || err == EWOULDBLOCK) {
            got = 0;
            break;
        }
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }

    result = PyList_New(0);
    if (result == NULL)
        goto done;
    for (int i = 0; i < got; i++) {
        const struct msghdr *hdr = &msgs[i].msg_hdr;
        if (hdr->msg_flags & MSG_TRUNC)
            continue; /* longer than bufsize: not a DNS query we could answer */
        PyObject *item = Py_BuildValue(
            "(y#Ny#)", (const char *)iovs[i].iov_base, (Py_ssize_t)msgs[i].msg_len,
            format_host(&addrs[i]), (const char *)&addrs[i], (Py_ssize_t)hdr->msg_namelen);
        if (item == NULL || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(item);
    }

done:
    PyMem_Free(bufs);
    PyMem_Free(addrs);
    PyMem_Free(iovs);
    PyMem_Free(msgs);
    return result;
}

/* sendmmsg() stops at the first message that fails and reports it on the next call: skip
 * such a message (e.g. to an unreachable address) and go on with the rest, but stop at
 * errors that would fail every message.  Returns how many went out; *first_error: the first
 * error met (0: none).  Call without the GIL. */
int
send_all(int fd, struct mmsghdr *msgs, unsigned int count, int *first_error)
{
    unsigned int next = 0;
    int sent = 0;
    while (next < count) {
        int n = sendmmsg(fd, msgs + next, count - next, 0);
        if (n > 0) {
            next += (unsigned int)n;
            sent += n;
            continue;
        }
        if (n == 0)
            break;
        int err = errno;
        if (err == EINTR)
            continue;
        if (*first_error == 0)
            *first_error = err;
        if (err == EAGAIN || err == EWOULDBLOCK || err == EBADF || err == ENOTSOCK
            || err == EFAULT || err == ENOTCONN || err == EPIPE)
            break;
        next += 1;
    }
    return sent;
}

static PyObject *
send_batch(PyObject *self, PyObject *args)
{
    int fd;
    PyObject *messages;
    if (!PyArg_ParseTuple(args, "iO:send_batch", &fd, &messages))
        return NULL;
    PyObject *seq = PySequence_Fast(messages, "messages must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count == 0) {
        Py_DECREF(seq);
        return PyLong_FromLong(0);
    }
    if (count > MAX_BATCH) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %d messages", MAX_BATCH);
        return NULL;
    }

    PyObject *result = NULL;
    struct mmsghdr *msgs = PyMem_Calloc((size_t)count, sizeof(*msgs));
    struct iovec *iovs = PyMem_Malloc((size_t)count * sizeof(*iovs));
    if (msgs == NULL || iovs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* The buffers borrowed below stay alive: ``seq`` holds the tuples, which hold them. */
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = items[i];
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
            || !PyBytes_Check(PyTuple_GET_ITEM(item, 0))
            || !PyBytes_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "messages must be (bytes, sockaddr bytes) tuples");
            goto done;
        }
        PyObject *data = PyTuple_GET_ITEM(item, 0), *addr = PyTuple_GET_ITEM(item, 1);
        if (PyBytes_GET_SIZE(addr) > (Py_ssize_t)sizeof(struct sockaddr_storage)) {
            PyErr_SetString(PyExc_ValueError, "sockaddr too long");
            goto done;
        }
        iovs[i].iov_base = PyBytes_AS_STRING(data);
        iovs[i].iov_len = (size_t)PyBytes_GET_SIZE(data);
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = PyBytes_AS_STRING(addr);
        msgs[i].msg_hdr.msg_namelen = (socklen_t)PyBytes_GET_SIZE(addr);
    }

    int first_error = 0;
    Py_ssize_t sent;
    Py_BEGIN_ALLOW_THREADS
    sent = send_all(fd, msgs, (unsigned int)count, &first_error);
    Py_END_ALLOW_THREADS
    if (sent == 0 && first_error != 0 && first_error != EAGAIN && first_error != EWOULDBLOCK) {
        errno = first_error;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = PyLong_FromSsize_t(sent);

done:
    PyMem_Free(iovs);
    PyMem_Free(msgs);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_VARARGS | METH_KEYWORDS,
     "recv_batch(fd, max_messages, bufsize=4096) -> list of (data, host, sockaddr)\n\n"
     "One recvmmsg(): waits for a datagram, then takes what is queued, up to max_messages."},
    {"send_batch", send_batch, METH_VARARGS,
     "send_batch(fd, messages) -> int\n\n"
     "Sends (data, sockaddr) pairs with sendmmsg(), returning how many went out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "dnsfailover.server._mmsg",
    .m_doc = "Batched UDP receive and send (recvmmsg/sendmmsg).",
    .m_size = -1,
    .m_methods = methods,
};

int hits_register(PyObject *module); /* _hits.c */

PyMODINIT_FUNC
PyInit__mmsg(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && hits_register(m) < 0)
        Py_CLEAR(m);
    return m;
}
