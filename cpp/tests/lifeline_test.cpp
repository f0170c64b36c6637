// LifeLines + DeathWatch: a holder process killed with SIGKILL is seen dead (and stamped), a holder
// that lets go cleanly is not, a dead holder's line can be taken over, bad memory is refused.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "vnfkit/runtime/dispatcher.hpp"
#include "vnfkit/runtime/lifeline.hpp"

using vnfkit::runtime::DeathWatch;
using vnfkit::runtime::LifeLines;

namespace {

// Shared anonymous memory: a forked child sees the same lines.
struct SharedMem {
  explicit SharedMem(std::size_t n) : size(n) {
    p = static_cast<std::byte*>(mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
  }
  ~SharedMem() { munmap(p, size); }
  std::span<std::byte> span() { return {p, size}; }
  std::byte* p;
  std::size_t size;
};

// Fork a child that attaches, holds `line`, reports through a pipe, then either sleeps until
// killed or lets go and exits 0.
pid_t holder(std::span<std::byte> mem, std::size_t line, bool let_go_after) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe");
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    LifeLines l = LifeLines::attach(mem);
    l.hold(line);
    char c = 'h';
    if (write(fds[1], &c, 1) != 1) _exit(3);
    if (let_go_after) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      l.let_go(line);
      _exit(0);
    }
    for (;;) pause();
  }
  close(fds[1]);
  char c = 0;
  EXPECT_EQ(read(fds[0], &c, 1), 1);
  close(fds[0]);
  return pid;
}

int wait_dead(const DeathWatch& w, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    const int d = w.first_dead();
    if (d >= 0) return d;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return -1;
}

}  // namespace

TEST(LifeLines, SigkillOfTheHolderIsSeenAndStamped) {
  SharedMem mem(LifeLines::required_bytes(2));
  LifeLines lines = LifeLines::create(mem.span(), 2);
  const pid_t pid = holder(mem.span(), 1, false);
  EXPECT_EQ(lines.state(1), LifeLines::State::kHeld);
  EXPECT_EQ(lines.holder_pid(1), static_cast<std::uint32_t>(pid));
  DeathWatch watch(lines);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(watch.first_dead(), -1);  // alive: nothing reported
  const std::uint64_t t0 = vnfkit::runtime::steady_now_ns();
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  EXPECT_EQ(wait_dead(watch, std::chrono::milliseconds(5000)), 1);
  EXPECT_EQ(lines.state(1), LifeLines::State::kDead);
  EXPECT_GE(lines.died_ns(1), t0);
  EXPECT_EQ(lines.died_ns(0), 0u);
  std::uint64_t n = 0;
  EXPECT_EQ(read(watch.event_fd(), &n, sizeof n), static_cast<ssize_t>(sizeof n));
  EXPECT_EQ(n, 1u);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status));
  watch.stop();  // line 0 was never held: its thread ends within one slice
}

TEST(LifeLines, ACleanLetGoIsNotADeath) {
  SharedMem mem(LifeLines::required_bytes(1));
  LifeLines lines = LifeLines::create(mem.span(), 1);
  const pid_t pid = holder(mem.span(), 0, true);
  DeathWatch watch(lines);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(watch.first_dead(), -1);
  EXPECT_EQ(lines.state(0), LifeLines::State::kLetGo);
  EXPECT_EQ(lines.died_ns(0), 0u);
}

TEST(LifeLines, AnExitWithoutLetGoIsADeath) {
  SharedMem mem(LifeLines::required_bytes(1));
  LifeLines lines = LifeLines::create(mem.span(), 1);
  DeathWatch watch(lines);
  const pid_t pid = fork();
  if (pid == 0) {
    LifeLines::attach(mem.span()).hold(0);
    _exit(1);  // as a worker that failed: the kernel marks the line
  }
  EXPECT_EQ(wait_dead(watch, std::chrono::milliseconds(5000)), 0);
  waitpid(pid, nullptr, 0);
}

TEST(LifeLines, ADeadHoldersLineIsTakenOver) {
  SharedMem mem(LifeLines::required_bytes(1));
  LifeLines lines = LifeLines::create(mem.span(), 1);
  const pid_t pid = holder(mem.span(), 0, false);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  lines.hold(0);  // EOWNERDEAD inside: made consistent, held by this process now
  EXPECT_EQ(lines.state(0), LifeLines::State::kHeld);
  EXPECT_EQ(lines.holder_pid(0), static_cast<std::uint32_t>(getpid()));
  lines.let_go(0);
  EXPECT_THROW(lines.let_go(0), std::invalid_argument);
}

TEST(LifeLines, BadMemoryAndLinesAreRefused) {
  EXPECT_THROW((void)LifeLines::required_bytes(0), std::invalid_argument);
  SharedMem mem(4096);
  EXPECT_THROW(LifeLines::attach(mem.span()), std::invalid_argument);  // never laid out
  EXPECT_THROW(LifeLines::create(mem.span().subspan(0, 32), 1), std::invalid_argument);
  EXPECT_THROW(LifeLines::create(mem.span().subspan(8), 1), std::invalid_argument);
  LifeLines lines = LifeLines::create(mem.span(), 2);
  EXPECT_THROW(lines.hold(2), std::out_of_range);
  EXPECT_THROW(LifeLines::attach(mem.span().subspan(0, LifeLines::required_bytes(1))), std::invalid_argument);
  EXPECT_EQ(LifeLines::attach(mem.span()).size(), 2u);
}
