/* main.c - command line (SPEC section 4): parse arguments, load the config,
 * hand over to the application context. Exit 0 success, 1 runtime failure,
 * 2 usage or configuration error. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge/app.h"

static void usage(FILE *out) {
    fputs("Usage:\n"
          "  canary-bridge [run] [-c FILE] [--dry-run]   run the daemon\n"
          "  canary-bridge sync  [-c FILE] [--dry-run]   one full reconcile pass, then exit\n"
          "  canary-bridge render [-c FILE] [NS/NAME]    read the source once, print the objects\n"
          "  canary-bridge check [-c FILE]               validate config, reach source and API\n"
          "  canary-bridge --version | --help\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE  configuration file (default " CONFIG_DEFAULT_PATH ")\n"
          "  --dry-run          send writes with dryRun=All: validated, never persisted\n"
          "  -v, --verbose      log at debug level (overrides log.level)\n"
          "\n"
          "Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.\n",
          out);
}

static int parse_args(int argc, char **argv, struct app *a, const char **config_path,
                      bool *verbose) {
    int i = 1;
    a->cmd = CMD_RUN;
    if (i < argc && argv[i][0] != '-') {
        const char *c = argv[i++];
        if (strcmp(c, "run") == 0)
            a->cmd = CMD_RUN;
        else if (strcmp(c, "sync") == 0)
            a->cmd = CMD_SYNC;
        else if (strcmp(c, "render") == 0)
            a->cmd = CMD_RENDER;
        else if (strcmp(c, "check") == 0)
            a->cmd = CMD_CHECK;
        else {
            fprintf(stderr, "canary-bridge: unknown command '%s'\n", c);
            return -1;
        }
    }
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-c") == 0 || strcmp(arg, "--config") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "canary-bridge: %s needs a file\n", arg);
                return -1;
            }
            *config_path = argv[i];
        } else if (strncmp(arg, "--config=", 9) == 0) {
            *config_path = arg + 9;
        } else if (strcmp(arg, "--dry-run") == 0 && (a->cmd == CMD_RUN || a->cmd == CMD_SYNC)) {
            a->dry_run = true;
        } else if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0) {
            *verbose = true;
        } else if (arg[0] != '-' && a->cmd == CMD_RENDER && !a->render_route) {
            if (!strchr(arg, '/')) {
                fprintf(stderr, "canary-bridge: render takes a route as NAMESPACE/NAME, got '%s'\n",
                        arg);
                return -1;
            }
            a->render_route = arg;
        } else {
            fprintf(stderr, "canary-bridge: unexpected argument '%s'\n", arg);
            return -1;
        }
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
    bool verbose = false;
    logger_init(&app.log, LOG_LVL_INFO);
    if (parse_args(argc, argv, &app, &config_path, &verbose) < 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
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
    /* Writes to a closed stdout pipe must be an error, not a kill. */
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)time(NULL) ^ (unsigned)getpid()); /* jitter only */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "canary-bridge: libcurl initialisation failed\n");
        config_free(&app.cfg);
        return EXIT_RUNTIME;
    }
    int code = app_main(&app);
    config_free(&app.cfg);
    curl_global_cleanup();
    return code;
}
