/* procstat.h - this process's own resource use, as the standard process_*
 * metrics of Prometheus client libraries: resident and virtual memory, CPU
 * seconds, open and maximum file descriptors, start time.
 *
 * Read from /proc/self/stat, /proc/stat (boot time), /proc/self/fd and
 * getrlimit at scrape time. procfs files are made by the kernel from memory
 * when read, so reading them does not wait on a disk; a scrape costs a few
 * system calls (plus one per open descriptor). Linux only.
 *
 * The parsers take text, so tests feed them any stat line. */
#ifndef CB_PROCSTAT_H
#define CB_PROCSTAT_H

struct metrics;
struct metric_family;

struct procstat {
    double cpu_seconds;        /* user + system time */
    double resident_bytes;     /* resident set size */
    double virtual_bytes;      /* virtual memory size */
    double start_time_seconds; /* Unix time the process started; 0 unknown */
    double open_fds;           /* -1 unknown */
    double max_fds;            /* soft RLIMIT_NOFILE; -1 unknown */
};

/* One /proc/<pid>/stat line. ticks: clock ticks per second
 * (sysconf(_SC_CLK_TCK)); page: page size in bytes; boot_time: Unix time of
 * boot (0: start_time_seconds stays 0). Fills cpu_seconds, resident_bytes,
 * virtual_bytes and start_time_seconds. 0, or -1 when the text is not a stat
 * line. The command name may hold spaces and parentheses. */
int procstat_parse_stat(const char *text, long ticks, long page, double boot_time,
                        struct procstat *out);
/* The "btime <seconds>" line of /proc/stat text. 0, or -1 without one. */
int procstat_parse_btime(const char *text, double *boot_time);
/* Everything, for this process. 0, or -1 when /proc/self/stat could not be
 * read (the other fields are still filled where possible). */
int procstat_read(struct procstat *out);

/* The process_* families. */
struct procstat_metrics {
    struct metric_family *cpu_seconds_total;     /* counter */
    struct metric_family *resident_memory_bytes; /* gauge */
    struct metric_family *virtual_memory_bytes;  /* gauge */
    struct metric_family *start_time_seconds;    /* gauge */
    struct metric_family *open_fds;              /* gauge */
    struct metric_family *max_fds;               /* gauge */
};

/* Register them in m. 0, or -1 (out of memory, or a name already taken). */
int procstat_register(struct metrics *m, struct procstat_metrics *out);
/* Set them from s (the counter moves up to s->cpu_seconds, never down);
 * unknown values leave their family as it was. */
void procstat_export(const struct procstat_metrics *pm, const struct procstat *s);

#endif
