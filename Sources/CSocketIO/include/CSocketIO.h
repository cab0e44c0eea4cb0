#ifndef CSOCKETIO_H
#define CSOCKETIO_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

/// One slot of a batched datagram exchange: the query buffer and its length, the reply buffer
/// and its length (0: send nothing), and the peer address.
typedef struct {
    void *buffer;
    size_t capacity;
    size_t length;
    void *reply;
    size_t reply_length;
    struct sockaddr_storage peer;
    socklen_t peer_length;
} tdn_datagram;

/// Receives up to `count` datagrams into `slots` (blocking for the first, then whatever is
/// queued; MSG_WAITFORONE). Returns the number received, or -1 with errno set.
int tdn_recv_batch(int fd, tdn_datagram *slots, unsigned int count);

/// Sends the replies of `slots` (those with a non-zero reply_length) to their peers.
/// Returns how many were sent.
int tdn_send_batch(int fd, tdn_datagram *slots, unsigned int count);

/// Sets SO_REUSEPORT, SO_RCVTIMEO (milliseconds) and, for IPv6, IPV6_V6ONLY.
int tdn_configure_udp_socket(int fd, int ipv6, int timeout_ms);
#endif
