/* procstat.c - the process_* metrics from /proc; see procstat.h. */
#include "bridge/lib/procstat.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bridge/lib/metrics.h"

/* Fields of /proc/<pid>/stat counted from the state (field 3) after the
 * command name: utime is field 14, stime 15, starttime 22, vsize 23, rss 24
 * (proc(5)). */
enum { F_UTIME = 11, F_STIME = 12, F_STARTTIME = 19, F_VSIZE = 20, F_RSS = 21, F_LAST = F_RSS };

int procstat_parse_stat(const char *text, long ticks, long page, double boot_time,
                        struct procstat *out) {
    /* The name is "(...)" and may hold anything, ")" included: the fields
     * start after the last ")". */
    const char *p = text ? strrchr(text, ')') : NULL;
    if (!p || ticks <= 0 || page <= 0 || !strchr(text, '('))
        return -1;
    p++;
    unsigned long long v[F_LAST + 1] = {0};
    for (int i = 0; i <= F_LAST; i++) {
        while (*p == ' ')
            p++;
        if (!*p || *p == '\n')
            return -1;
        if (i == 0) { /* the state: one letter */
            while (*p && *p != ' ')
                p++;
            continue;
        }
        /* Some fields may be negative (priority, nice): read them signed. */
        char *end;
        errno = 0;
        long long n = strtoll(p, &end, 10);
        if (end == p || errno || (*end != ' ' && *end != '\n' && *end != '\0'))
            return -1;
        v[i] = (unsigned long long)n;
        p = end;
    }
    out->cpu_seconds = (double)(v[F_UTIME] + v[F_STIME]) / (double)ticks;
    out->virtual_bytes = (double)v[F_VSIZE];
    out->resident_bytes = (double)v[F_RSS] * (double)page;
    out->start_time_seconds =
        boot_time > 0 ? boot_time + (double)v[F_STARTTIME] / (double)ticks : 0;
    return 0;
}

int procstat_parse_btime(const char *text, double *boot_time) {
    for (const char *line = text; line && *line;) {
        if (strncmp(line, "btime ", 6) == 0) {
            char *end;
            errno = 0;
            unsigned long long t = strtoull(line + 6, &end, 10);
            if (end == line + 6 || errno || (*end != '\n' && *end != '\0'))
                return -1;
            *boot_time = (double)t;
            return 0;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

/* Read a procfs file into buf (NUL-terminated, cut at cap - 1 bytes). The
 * number of bytes, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len < cap - 1) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0)
                len = 0;
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return len ? (ssize_t)len : -1;
}

/* /proc/stat's btime. The file can be long (a line per CPU, and the
 * interrupt counts before btime), so it is scanned in pieces, a line that
 * straddles two pieces carried over. */
static int read_boot_time(double *boot_time) {
    int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[8192];
    size_t have = 0;
    int rc = -1;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = '\0';
        /* Whole lines only; keep the last partial one (it may be btime). */
        char *last_nl = strrchr(buf, '\n');
        if (!last_nl) {
            if (have < sizeof buf - 1)
                continue;
            have = 0; /* a line longer than the buffer: not btime, skip it */
            continue;
        }
        char save = last_nl[1];
        last_nl[1] = '\0';
        const char *b = strstr(buf, "\nbtime ");
        if (b || strncmp(buf, "btime ", 6) == 0) {
            rc = procstat_parse_btime(b ? b + 1 : buf, boot_time);
            break;
        }
        last_nl[1] = save;
        /* Keep "\n" + the partial line, so "\nbtime" still matches. */
        size_t keep = have - (size_t)(last_nl - buf);
        memmove(buf, last_nl, keep);
        have = keep;
    }
    close(fd);
    return rc;
}

static double count_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int own = dirfd(d);
    double n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        if (atoi(e->d_name) != own) /* the directory being read is no fd of ours */
            n++;
    }
    closedir(d);
    return n;
}

int procstat_read(struct procstat *out) {
    memset(out, 0, sizeof *out);
    out->open_fds = count_open_fds();
    struct rlimit rl;
    out->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : -1;
    double boot = 0;
    if (read_boot_time(&boot) < 0) {
        /* No /proc/stat (a restricted procfs): boot time from the clocks. */
        struct timespec rt, bt;
        if (clock_gettime(CLOCK_REALTIME, &rt) == 0 && clock_gettime(CLOCK_BOOTTIME, &bt) == 0)
            boot = (double)(rt.tv_sec - bt.tv_sec);
    }
    char stat[1024];
    if (read_small("/proc/self/stat", stat, sizeof stat) < 0)
        return -1;
    return procstat_parse_stat(stat, sysconf(_SC_CLK_TCK), sysconf(_SC_PAGESIZE), boot, out);
}

int procstat_register(struct metrics *m, struct procstat_metrics *out) {
    /* Names and help as the Prometheus client libraries have them, so
     * dashboards made for any exporter work. */
    out->cpu_seconds_total =
        metrics_counter(m, "process_cpu_seconds_total",
                        "Total user and system CPU time spent in seconds.", 0, NULL);
    out->resident_memory_bytes = metrics_gauge(m, "process_resident_memory_bytes",
                                               "Resident memory size in bytes.", 0, NULL);
    out->virtual_memory_bytes =
        metrics_gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.", 0, NULL);
    out->start_time_seconds =
        metrics_gauge(m, "process_start_time_seconds",
                      "Start time of the process since unix epoch in seconds.", 0, NULL);
    out->open_fds =
        metrics_gauge(m, "process_open_fds", "Number of open file descriptors.", 0, NULL);
    out->max_fds =
        metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.", 0, NULL);
    return out->cpu_seconds_total && out->resident_memory_bytes && out->virtual_memory_bytes &&
                   out->start_time_seconds && out->open_fds && out->max_fds
               ? 0
               : -1;
}

void procstat_export(const struct procstat_metrics *pm, const struct procstat *s) {
    double cpu;
    if (metric_value(pm->cpu_seconds_total, NULL, &cpu) == 0 && s->cpu_seconds > cpu)
        metric_add(pm->cpu_seconds_total, NULL, s->cpu_seconds - cpu);
    if (s->resident_bytes > 0)
        metric_set(pm->resident_memory_bytes, NULL, s->resident_bytes);
    if (s->virtual_bytes > 0)
        metric_set(pm->virtual_memory_bytes, NULL, s->virtual_bytes);
    if (s->start_time_seconds > 0)
        metric_set(pm->start_time_seconds, NULL, s->start_time_seconds);
    if (s->open_fds >= 0)
        metric_set(pm->open_fds, NULL, s->open_fds);
    if (s->max_fds >= 0)
        metric_set(pm->max_fds, NULL, s->max_fds);
}
