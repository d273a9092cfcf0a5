/* fileread.c - non-blocking read of a small file; see fileread.h.
 * open -> read (until EOF or the limit) -> close -> deliver. */
#include "bridge/lib/fileread.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/lib/buf.h"

struct file_read {
    uv_fs_t fs;
    uv_file fd;
    int err;
    size_t len;
    file_read_cb cb; /* NULL once detached */
    void *user;
    char buf[FILEREAD_MAX + 1];
};

static void wipe_free(struct file_read *fr) {
    /* explicit_bzero: the compiler may not drop it as a dead store. */
    explicit_bzero(fr->buf, sizeof fr->buf);
    free(fr);
}

static void deliver(struct file_read *fr) {
    if (fr->cb) {
        size_t n = fr->len;
        while (n > 0 && (fr->buf[n - 1] == '\n' || fr->buf[n - 1] == '\r'))
            n--;
        fr->buf[n] = '\0';
        fr->cb(fr->user, fr->err, fr->err ? "" : fr->buf, fr->err ? 0 : n);
    }
    wipe_free(fr);
}

static void on_closed(uv_fs_t *req) {
    struct file_read *fr = req->data;
    uv_fs_req_cleanup(req);
    deliver(fr);
}

static void close_file(struct file_read *fr) {
    int rc = uv_fs_close(fr->fs.loop, &fr->fs, fr->fd, on_closed);
    if (rc < 0)
        deliver(fr);
    else
        fr->fs.data = fr;
}

static void read_some(struct file_read *fr);

static void on_read(uv_fs_t *req) {
    struct file_read *fr = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (n < 0) {
        fr->err = (int)n;
    } else if (n > 0) {
        fr->len += (size_t)n;
        if (fr->len > FILEREAD_MAX) {
            fr->err = UV_EFBIG;
        } else {
            read_some(fr);
            return;
        }
    }
    close_file(fr);
}

static void read_some(struct file_read *fr) {
    /* One byte of room past the limit tells "exactly at the limit" from "over". */
    uv_buf_t b = uv_buf_init(fr->buf + fr->len, (unsigned)(sizeof fr->buf - fr->len));
    int rc = uv_fs_read(fr->fs.loop, &fr->fs, fr->fd, &b, 1, -1, on_read);
    if (rc < 0) {
        fr->err = rc;
        close_file(fr);
    } else {
        fr->fs.data = fr;
    }
}

static void on_open(uv_fs_t *req) {
    struct file_read *fr = req->data;
    ssize_t fd = req->result;
    uv_fs_req_cleanup(req);
    if (fd < 0) {
        fr->err = (int)fd;
        deliver(fr);
        return;
    }
    fr->fd = (uv_file)fd;
    read_some(fr);
}

struct file_read *file_read_start(uv_loop_t *loop, const char *path, file_read_cb cb, void *user,
                                  int *err) {
    struct file_read *fr = calloc(1, sizeof *fr);
    if (!fr) {
        *err = UV_ENOMEM;
        return NULL;
    }
    fr->cb = cb;
    fr->user = user;
    int rc = uv_fs_open(loop, &fr->fs, path, O_RDONLY | O_CLOEXEC, 0, on_open);
    if (rc < 0) {
        free(fr);
        *err = rc;
        return NULL;
    }
    /* uv_fs_* reset the request's data field, so set it after the call. */
    fr->fs.data = fr;
    return fr;
}

void file_read_detach(struct file_read *fr) {
    if (fr)
        fr->cb = NULL;
}

int file_read_all(const char *path, size_t max, char **text, size_t *len, char *err,
                  size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    buf_t b = BUF_INIT;
    char chunk[8192];
    int rc = 0;
    for (;;) {
        size_t n = fread(chunk, 1, sizeof chunk, f);
        if (n == 0)
            break;
        if (b.len + n > max) {
            snprintf(err, errlen, "%s: larger than %zu bytes; refusing to read it", path, max);
            rc = -1;
            break;
        }
        if (buf_append(&b, chunk, n) < 0) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        rc = -1;
    }
    if (fclose(f) != 0 && rc == 0) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && !b.data && buf_reserve(&b, 0) < 0) { /* empty file: still return "" */
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -1;
    }
    if (rc < 0) {
        buf_free(&b);
        return -1;
    }
    *len = b.len;
    *text = buf_steal(&b);
    return 0;
}
