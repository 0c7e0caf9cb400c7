/* The article's server: bind the port (8000, or argv[1]) without any socket option, accept
 * one client, read what it sends, then reply in a loop forever (paced, so that a client that
 * does not read still has room in its window for the FIN of case 2). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8000;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "failed to bind port, errno = %d\n", errno);
        return 1;
    }
    listen(s, 16);
    int c = accept(s, NULL, NULL);
    char buf[256];
    ssize_t n = read(c, buf, sizeof buf);
    fprintf(stderr, "read %zd bytes, replying forever\n", n);
    while (1) {
        if (write(c, "I am server\n", 12) < 0)
            break;
        usleep(100000);
    }
    return 0;
}
