// A burst of 256 simultaneous non-blocking connects to 127.0.0.1:PORT; prints connect-latency percentiles.
// gcc -O2 -o /tmp/connect_burst bench/connect_burst.c && /tmp/connect_burst 8090
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){int port=atoi(argv[1]);enum{N=256};int fd[N];double st[N],lat[N];struct pollfd p[N];
struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_port=htons(port);a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);
for(int i=0;i<N;i++){fd[i]=socket(AF_INET,SOCK_STREAM|SOCK_NONBLOCK,0);}
for(int i=0;i<N;i++){st[i]=now();connect(fd[i],(void*)&a,sizeof a);p[i].fd=fd[i];p[i].events=POLLOUT;lat[i]=-1;}
int left=N;while(left){poll(p,N,1000);for(int i=0;i<N;i++)if(p[i].fd>=0&&p[i].revents){lat[i]=now()-st[i];p[i].fd=-1;left--;}}
qsort(lat,N,sizeof(double),cmp);printf("connect burst %d: p50 %.3f ms p99 %.3f ms max %.3f ms\n",N,lat[N/2],lat[(int)(N*0.99)],lat[N-1]);
for(int i=0;i<N;i++)close(fd[i]);}
