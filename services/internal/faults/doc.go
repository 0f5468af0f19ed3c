// Package faults holds the fault tests of issue 10: mcc killed with
// SIGKILL during a write storm, Redis restarted under load, a Redis Cluster
// primary killed, one service of a split deployment killed, and abusive
// clients. They start real processes (mcc, redis-server) and take minutes,
// so they build only with the faults tag: run them with `make test-faults`.
// Their figures are in docs/RELIABILITY.md.
package faults
