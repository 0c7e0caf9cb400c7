/* The article's client: connect to 127.0.0.1 (port 8000, or argv[1]), write, read until
 * EOF, close. argv[2] seconds of sleep before the first read: a client blocked before it
 * reads the EOF (the article's case 2). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8000;
    int delay = argc > 2 ? atoi(argv[2]) : 0;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("connect");
        return 1;
    }
    write(s, "I am client", 11);
    if (delay > 0)
        sleep(delay);
    char buf[4096];
    long total = 0;
    ssize_t n;
    while ((n = read(s, buf, sizeof buf)) > 0)
        total += n;
    fprintf(stderr, "read %ld bytes, then EOF: closing\n", total);
    close(s);
    return 0;
}
