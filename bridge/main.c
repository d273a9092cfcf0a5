/* main.c - the command line (docs/usage.md, the man page): parse arguments,
 * load the config, hand over to the application context. Exit 0 success,
 * 1 runtime failure, 2 usage or configuration error. */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bridge/app.h"
#include "bridge/lib/duration.h"

static void usage(FILE *out) {
    fputs("Usage:\n"
          "  canary-bridge [run] [-c FILE] [--dry-run]   run the daemon\n"
          "  canary-bridge sync  [-c FILE] [--dry-run]   one full reconcile pass, then exit\n"
          "  canary-bridge render [-c FILE] [NS/NAME]    print the objects as they would be\n"
          "                                              written (input for kubectl apply/diff)\n"
          "  canary-bridge status [-c FILE] [NS/NAME] [-o json]\n"
          "                                              each route's desired and live weights\n"
          "  canary-bridge diff [-c FILE] [NS/NAME]      unified diff of live objects against\n"
          "                                              what a sync would write\n"
          "  canary-bridge check [-c FILE] [--credentials-dir DIR] [--timeout DURATION]\n"
          "                                              validate config, reach source and API,\n"
          "                                              ask the API server for the permissions\n"
          "  canary-bridge --version | --help\n"
          "\n"
          "Options (before or after the command):\n"
          "  -c, --config FILE  configuration file (default " CONFIG_DEFAULT_PATH ")\n"
          "  --credentials-dir DIR\n"
          "                     expand ${CREDENTIALS_DIRECTORY}/ in the file keys of the\n"
          "                     config to DIR (default: $CREDENTIALS_DIRECTORY, which\n"
          "                     systemd sets for a service with LoadCredential=)\n"
          "  --dry-run          run, sync: send writes with dryRun=All: validated, never\n"
          "                     persisted; every log line says dry-run\n"
          "  -o, --output json  status: one JSON document instead of the table\n"
          "  --timeout DURATION one-shot commands: give up after this long, in all\n"
          "                     (e.g. 10s; default 30s)\n"
          "  -v, --verbose      log at debug level (overrides log.level)\n"
          "\n"
          "Exit status: 0 success, 1 runtime failure, 2 usage or configuration error;\n"
          "diff: 0 nothing would change, 1 something would, 2 an error.\n",
          out);
}

static int parse_command(const char *c, enum app_cmd *cmd) {
    static const struct {
        const char *name;
        enum app_cmd cmd;
    } cmds[] = {{"run", CMD_RUN},     {"sync", CMD_SYNC},     {"render", CMD_RENDER},
                {"check", CMD_CHECK}, {"status", CMD_STATUS}, {"diff", CMD_DIFF}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(c, cmds[i].name) == 0) {
            *cmd = cmds[i].cmd;
            return 0;
        }
    }
    fprintf(stderr, "canary-bridge: unknown command '%s'\n", c);
    return -1;
}

enum option_match {
    OPTION_OTHER,        /* argv[*i] is not this option */
    OPTION_TAKEN,        /* it is, and *value is set */
    OPTION_MISSING_VALUE /* it is, without a value (said on stderr) */
};

/* An option that takes a value, as "--opt VALUE" or "--opt=VALUE" (or "-c
 * VALUE"); *i moves past the value when it is a separate word. */
static enum option_match option_value(int argc, char **argv, int *i, const char *shortopt,
                                      const char *longopt, const char **value) {
    const char *arg = argv[*i];
    size_t n = strlen(longopt);
    if (strncmp(arg, longopt, n) == 0 && arg[n] == '=') {
        *value = arg + n + 1;
        return OPTION_TAKEN;
    }
    if (strcmp(arg, longopt) != 0 && !(shortopt && strcmp(arg, shortopt) == 0))
        return OPTION_OTHER;
    if (++*i >= argc) {
        fprintf(stderr, "canary-bridge: %s needs a value\n", arg);
        return OPTION_MISSING_VALUE;
    }
    *value = argv[*i];
    return OPTION_TAKEN;
}

static bool takes_route(enum app_cmd cmd) {
    return cmd == CMD_RENDER || cmd == CMD_STATUS || cmd == CMD_DIFF;
}

static const char *argv_command(enum app_cmd cmd) {
    return cmd == CMD_RENDER ? "render" : cmd == CMD_STATUS ? "status" : "diff";
}

/* Options go before or after the command (`canary-bridge -c f.yaml check`
 * and `canary-bridge check -c f.yaml`); the first word that is not an option
 * or an option's value is the command. */
static int parse_args(int argc, char **argv, struct app *a, const char **config_path, bool *verbose,
                      const char **creds_dir) {
    bool have_cmd = false;
    const char *timeout = NULL, *output = NULL;
    a->cmd = CMD_RUN;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        enum option_match m;
        if ((m = option_value(argc, argv, &i, "-c", "--config", config_path)) != OPTION_OTHER ||
            (m = option_value(argc, argv, &i, NULL, "--credentials-dir", creds_dir)) !=
                OPTION_OTHER ||
            (m = option_value(argc, argv, &i, NULL, "--timeout", &timeout)) != OPTION_OTHER ||
            (m = option_value(argc, argv, &i, "-o", "--output", &output)) != OPTION_OTHER) {
            if (m == OPTION_MISSING_VALUE)
                return -1;
        } else if (strcmp(arg, "--dry-run") == 0) {
            a->dry_run = true;
        } else if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0) {
            *verbose = true;
        } else if (arg[0] != '-' && !have_cmd) {
            if (parse_command(arg, &a->cmd) < 0)
                return -1;
            have_cmd = true;
        } else if (arg[0] != '-' && takes_route(a->cmd) && !a->route) {
            if (!strchr(arg, '/')) {
                fprintf(stderr, "canary-bridge: %s takes a route as NAMESPACE/NAME, got '%s'\n",
                        argv_command(a->cmd), arg);
                return -1;
            }
            a->route = arg;
        } else {
            fprintf(stderr, "canary-bridge: unexpected argument '%s'\n", arg);
            return -1;
        }
    }
    if (a->dry_run && a->cmd != CMD_RUN && a->cmd != CMD_SYNC) {
        fprintf(stderr, "canary-bridge: --dry-run goes with run or sync (render, status, diff "
                        "and check never write)\n");
        return -1;
    }
    if (timeout && a->cmd == CMD_RUN) {
        fprintf(stderr, "canary-bridge: --timeout goes with a one-shot command (check, sync, "
                        "render, status, diff)\n");
        return -1;
    }
    if (output && a->cmd != CMD_STATUS) {
        fprintf(stderr, "canary-bridge: -o goes with status\n");
        return -1;
    }
    if (output && strcmp(output, "json") != 0) {
        fprintf(stderr, "canary-bridge: -o takes json, got '%s'\n", output);
        return -1;
    }
    a->json = output != NULL;
    if (timeout && (parse_duration_ms(timeout, &a->timeout_ms) < 0 || a->timeout_ms == 0)) {
        fprintf(stderr,
                "canary-bridge: --timeout: want a duration such as 10s or 1m30s, got '%s'\n",
                timeout);
        return -1;
    }
    return 0;
}

/* --credentials-dir DIR: what $CREDENTIALS_DIRECTORY is under systemd, so a
 * config naming ${CREDENTIALS_DIRECTORY}/... is read (and expanded by
 * config_load) the same way from a shell. Set in the environment so a reload
 * and exec credential plugins see it too, as they would under systemd. */
static int use_credentials_dir(const char *dir) {
    struct stat st;
    const char *why = NULL;
    if (!*dir)
        why = "empty";
    else if (stat(dir, &st) != 0)
        why = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
        why = "not a directory";
    if (why) {
        fprintf(stderr, "canary-bridge: --credentials-dir %s: %s\n", dir, why);
        return -1;
    }
    if (setenv("CREDENTIALS_DIRECTORY", dir, 1) != 0) {
        fprintf(stderr, "canary-bridge: --credentials-dir: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("canary-bridge %s\n", CANARY_BRIDGE_VERSION);
            return EXIT_OK;
        }
    }
    /* The application context: the one piece of mutable state, handed to
     * everything that needs it. Static storage because it is large; nothing
     * but main refers to it by name. */
    static struct app app;
    const char *config_path = CONFIG_DEFAULT_PATH;
    const char *creds_dir = NULL;
    bool verbose = false;
    logger_init(&app.log, LOG_LVL_INFO);
    if (parse_args(argc, argv, &app, &config_path, &verbose, &creds_dir) < 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (creds_dir && use_credentials_dir(creds_dir) < 0)
        return EXIT_USAGE;
    /* Nothing a dry run logs may read as if it had been done. */
    if (app.dry_run)
        app.log.tag = "dry-run: ";
    char err[1024];
    if (config_load(config_path, &app.cfg, err, sizeof err) < 0) {
        fprintf(stderr, "canary-bridge: %s\n", err);
        if (app.cmd == CMD_CHECK)
            printf("FAIL config %s\n", config_path);
        return EXIT_USAGE;
    }
    if (app.cmd == CMD_CHECK)
        printf("ok   config %s\n", config_path);
    app.verbose = verbose;
    app.log.level = verbose ? LOG_LVL_DEBUG : app.cfg.log.level;
    app.log.format = app.cfg.log.format;
    /* Writes to a closed stdout pipe must be an error, not a kill. */
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)time(NULL) ^ (unsigned)getpid()); /* jitter only */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "canary-bridge: libcurl initialisation failed\n");
        config_free(&app.cfg);
        return EXIT_RUNTIME;
    }
    int code = app_main(&app);
    /* diff exits as kubectl diff does: 1 is "changes", so a failure is 2. */
    if (app.cmd == CMD_DIFF && code == EXIT_RUNTIME && !app.diff_changes)
        code = EXIT_DIFF_ERROR;
    config_free(&app.cfg);
    curl_global_cleanup();
    logger_close(&app.log);
    return code;
}
