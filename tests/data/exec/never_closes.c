/* A server that never closes: it accepts each client on the port (argv[1]), reads its
 * request, answers once, and keeps the socket open forever (the CLOSE_WAIT leak). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8000;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int on = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 16) < 0) {
        perror("bind");
        return 1;
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        char buf[256];
        ssize_t n = read(c, buf, sizeof buf);
        fprintf(stderr, "read %zd bytes, answering, never closing\n", n);
        write(c, "hello\n", 6);
        /* no close(c) */
    }
}
