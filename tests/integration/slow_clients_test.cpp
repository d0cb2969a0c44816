// The real server against clients that hold connections without finishing a
// request: slow-drip headers, idle keep-alive connections, over-long headers
// and connect bursts. Behaviour only: a fresh client is served meanwhile.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server_process.hpp"
#include "support.hpp"

namespace {

using nlohmann::json;
using t2::testing::ServerProcess;

// A blocking TCP connection to 127.0.0.1.
class Socket {
 public:
  explicit Socket(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  bool connected() const { return connected_; }
  bool send(const std::string& data) const {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads until the response's header and `body_bytes` more have come (or the peer closes).
  std::string read_response() const {
    std::string in;
    char buffer[4096];
    for (;;) {
      const size_t end = in.find("\r\n\r\n");
      if (end != std::string::npos) {
        const size_t at = in.find("Content-Length: ");
        const size_t length = at == std::string::npos ? 0 : std::stoul(in.substr(at + 16));
        if (in.size() >= end + 4 + length) return in;
      }
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) return in;
      in.append(buffer, static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  bool connected_ = false;
};

class SlowClients : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(t2::testing::stories_dir())) return;
    // Few workers, as the shipped config had: slow clients must not need more.
    server_ = std::make_unique<ServerProcess>(std::vector<std::string>{
        "--model", t2::testing::stories_dir().string(), "--experts-dir", t2::testing::fresh_dir("slow-experts").string(),
        "--dispatch-template", std::string(T2_SOURCE_DIR) + "/configs/dispatch/prompt.txt", "--threads", "8"});
  }
  static void TearDownTestSuite() { server_.reset(); }
  void SetUp() override {
    T2_REQUIRE_PATH(t2::testing::stories_dir());
    ASSERT_TRUE(server_) << "the server did not start";
  }

  // /health and a completion on a fresh connection (a generous 5 s read limit: behaviour, not timing).
  static void expect_fresh_clients_served() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(5, 0);
    const auto health = c.Get("/health");
    ASSERT_TRUE(health) << httplib::to_string(health.error());
    EXPECT_EQ(health->status, 200);
    const auto completion = c.Post("/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 4}}.dump(), "application/json");
    ASSERT_TRUE(completion) << httplib::to_string(completion.error());
    EXPECT_EQ(completion->status, 200) << completion->body;
  }

  static inline std::unique_ptr<ServerProcess> server_;
};

}  // namespace

TEST_F(SlowClients, AThousandSlowDripConnectionsDoNotStarveAFreshOne) {
  std::vector<std::unique_ptr<Socket>> slow;
  for (int i = 0; i < 1000; ++i) {
    slow.push_back(std::make_unique<Socket>(server_->port()));
    ASSERT_TRUE(slow.back()->connected()) << i;
    ASSERT_TRUE(slow.back()->send("GET /health HTTP/1.1\r\nHost: x\r\nX-Drip: "));  // and never the rest
  }
  for (const auto& s : slow) ASSERT_TRUE(s->send("a"));  // one more byte each: still dripping
  expect_fresh_clients_served();
}

TEST_F(SlowClients, AThousandIdleKeepAliveConnectionsDoNotStarveAFreshOne) {
  std::vector<std::unique_ptr<Socket>> idle;
  for (int i = 0; i < 1000; ++i) {
    idle.push_back(std::make_unique<Socket>(server_->port()));
    ASSERT_TRUE(idle.back()->send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_NE(idle.back()->read_response().find("HTTP/1.1 200"), std::string::npos) << i;  // then it stays open, idle
  }
  expect_fresh_clients_served();
  // They are still kept alive: a second request on one of them is answered.
  ASSERT_TRUE(idle.front()->send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_NE(idle.front()->read_response().find("HTTP/1.1 200"), std::string::npos);
}

TEST_F(SlowClients, OverLongHeadersGet431) {
  Socket s(server_->port());
  ASSERT_TRUE(s.send("GET /health HTTP/1.1\r\nHost: x\r\n"));
  const std::string line = "X-Padding: " + std::string(8000, 'a') + "\r\n";
  for (int i = 0; i < 128 && s.send(line); ++i) {
  }  // up to 1 MB; the server refuses it after its 32 KiB limit and stops reading
  const std::string response = s.read_response();
  EXPECT_EQ(response.rfind("HTTP/1.1 431", 0), 0u) << response.substr(0, 200);
  EXPECT_NE(response.find("\"code\":\"headers_too_large\""), std::string::npos) << response;
  expect_fresh_clients_served();
}

TEST_F(SlowClients, ABurstOf256ConnectsIsServedWhole) {
  std::vector<std::future<std::string>> answers;
  for (int i = 0; i < 256; ++i) {
    answers.push_back(std::async(std::launch::async, [] {
      Socket s(server_->port());
      if (!s.connected() || !s.send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) return std::string();
      return s.read_response();
    }));
  }
  int ok = 0;
  for (auto& a : answers) ok += a.get().rfind("HTTP/1.1 200", 0) == 0;
  EXPECT_EQ(ok, 256);
}
