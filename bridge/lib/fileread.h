/* fileread.h - read a small file (a token, a password) without blocking the
 * loop, through libuv's fs requests.
 *
 * Secrets rotate (projected service-account tokens every hour, passwords by
 * hand), so they are re-read while the daemon runs; doing that with stdio on
 * the loop thread would block it on a slow disk or NFS. uv_fs requests cannot
 * be taken back once started, so a read owns itself: a caller that goes away
 * detaches it, and it frees itself when the last fs request completes. */
#ifndef CB_FILEREAD_H
#define CB_FILEREAD_H

#include <stddef.h>
#include <uv.h>

#define FILEREAD_MAX (64 * 1024)

struct file_read;

/* err is 0 or a libuv error (UV_EFBIG past FILEREAD_MAX). data is the content
 * without trailing CR/LF, NUL-terminated; it is wiped after the callback
 * returns, so copy what you keep. */
typedef void (*file_read_cb)(void *user, int err, const char *data, size_t len);

/* Returns NULL with *err set (a libuv error) when it could not start. */
struct file_read *file_read_start(uv_loop_t *loop, const char *path, file_read_cb cb, void *user,
                                  int *err);
/* The callback will not be called; memory is released when libuv is done. */
void file_read_detach(struct file_read *fr);

/* Read a whole file of at most max bytes into a heap string (NUL-terminated;
 * *len excludes the NUL), with stdio: it blocks, so only for start-up and
 * one-shot commands (the config file, kubeconfigs), never on the running
 * loop. Errors name the file: "PATH: cannot open: ...". */
int file_read_all(const char *path, size_t max, char **text, size_t *len, char *err, size_t errlen);

#endif
