/* bridge/http.c - placeholder until implemented. */
