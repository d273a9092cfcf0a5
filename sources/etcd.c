/* sources/etcd.c - placeholder until implemented. */
