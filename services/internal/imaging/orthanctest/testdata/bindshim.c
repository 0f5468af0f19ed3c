/*
 * bindshim.c keeps a server that binds every address on loopback. It is
 * loaded with LD_PRELOAD and replaces bind(2): a bind to the IPv4 or IPv6
 * wildcard address becomes a bind to 127.0.0.1 or ::1; every other bind is
 * passed on unchanged. Orthanc 1.10 has no option to choose its listening
 * address, and the tests must not expose a PACS full of test patients to
 * the network.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_func)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
	static bind_func next;
	if (next == NULL) {
		next = (bind_func)dlsym(RTLD_NEXT, "bind");
	}
	if (addr != NULL && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		struct sockaddr_in in;
		memcpy(&in, addr, sizeof in);
		if (in.sin_addr.s_addr == htonl(INADDR_ANY)) {
			in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			return next(fd, (const struct sockaddr *)&in, sizeof in);
		}
	}
	if (addr != NULL && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 in6;
		memcpy(&in6, addr, sizeof in6);
		if (memcmp(&in6.sin6_addr, &in6addr_any, sizeof in6addr_any) == 0) {
			in6.sin6_addr = in6addr_loopback;
			return next(fd, (const struct sockaddr *)&in6, sizeof in6);
		}
	}
	return next(fd, addr, len);
}
