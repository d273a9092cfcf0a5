/* bridge/httpd.c - placeholder until implemented. */
