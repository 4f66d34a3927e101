#pragma once
// Reading a file through a read-only memory map, and writing one atomically:
// to a temporary name in the destination's directory, synced, then renamed
// over the destination. Messages start with the caller's label ("safetensors").
//
// What a tool can rely on: an input is opened without blocking and must be a
// regular file (a FIFO, device or directory is refused before any read); an
// existing destination must be a regular file (never a device, FIFO or
// socket replaced) and keeps its permission bits; a destination whose
// extension names another container than the one written is refused;
// check_output_target refuses an output that is one of the inputs (by file
// identity, so through links too). Temporary files and mappings are recorded
// where a signal handler can see them: install_signal_cleanup() makes
// SIGINT/SIGTERM/SIGHUP remove the temporaries before the conventional exit,
// and turns a SIGBUS from a mapped input that shrank into an error naming it.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <utility>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "../core/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define LOWBIT_FILE_IO_POSIX 1
#else
#include <fstream>
#define LOWBIT_FILE_IO_POSIX 0
#endif

LOWBIT_NAMESPACE_BEGIN

namespace detail {

/// Keeps a file's bytes alive: the owner a parsed file holds on to.
struct byte_owner {
    virtual ~byte_owner() = default;
};

/// The container a file extension names ("gguf" for x.gguf), or empty.
inline std::string_view container_of_extension(const std::filesystem::path& p) {
    static constexpr std::array<std::string_view, 2> known{"gguf", "safetensors"};
    const std::string ext = p.extension().string();
    for (const auto k : known)
        if (ext.size() == k.size() + 1 && ext[0] == '.' && std::string_view(ext).substr(1) == k) return k;
    return {};
}

/// The container a file's first bytes announce ("gguf", "safetensors"), or
/// empty: what a reader names when it is handed the other kind of file.
inline std::string_view container_of_bytes(std::span<const std::byte> b) {
    if (b.size() >= 4 && std::memcmp(b.data(), "GGUF", 4) == 0) return "gguf";
    if (b.size() >= 10) {
        std::uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(b[static_cast<std::size_t>(i)]);
        if (n >= 2 && n <= b.size() - 8 && std::to_integer<char>(b[8]) == '{') return "safetensors";
    }
    return {};
}

/// An output whose extension names another container than `label` (the one
/// being written) is refused; an unknown or no extension is not.
inline void check_output_extension(const std::filesystem::path& target, std::string_view label) {
    const auto named = container_of_extension(target);
    if (!named.empty() && named != container_of_extension("x." + std::string(label)))
        LOWBIT_THROW(errc::invalid_argument, std::string(label) + ": the output '" + target.string() + "' names a " +
                                                 std::string(named) + " file; this writes " + std::string(label));
}

#if LOWBIT_FILE_IO_POSIX

/// "a directory", "a FIFO", ... for a file that is not a regular one.
inline std::string kind_of(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    return "not a regular file";
}

/// Live temporary files and mappings, in fixed slots a signal handler can read
/// without locks (one that finds all slots taken is simply not recorded).
struct live_files {
    static constexpr std::size_t slots = 64;
    struct mapping {
        std::atomic<bool> taken{false};
        std::atomic<const std::byte*> base{nullptr};  ///< published last
        std::size_t size = 0;
        const char* path = nullptr;
    };
    std::array<std::atomic<const char*>, slots> temps{};
    std::array<mapping, slots> maps{};

    static live_files& get() noexcept {
        static live_files l;
        return l;
    }
    std::size_t add_temp(const char* path) noexcept {
        for (std::size_t i = 0; i < slots; ++i) {
            const char* expected = nullptr;
            if (temps[i].compare_exchange_strong(expected, path)) return i;
        }
        return slots;
    }
    void remove_temp(std::size_t i) noexcept {
        if (i < slots) temps[i].store(nullptr);
    }
    std::size_t add_map(const std::byte* base, std::size_t size, const char* path) noexcept {
        for (std::size_t i = 0; i < slots; ++i) {
            bool expected = false;
            if (maps[i].taken.compare_exchange_strong(expected, true)) {
                maps[i].size = size;
                maps[i].path = path;
                maps[i].base.store(base, std::memory_order_release);
                return i;
            }
        }
        return slots;
    }
    void remove_map(std::size_t i) noexcept {
        if (i >= slots) return;
        maps[i].base.store(nullptr);
        maps[i].taken.store(false);
    }
};

/// A whole regular file, mapped read-only (an empty file maps to no bytes).
class mapped_file final : public byte_owner {
public:
    mapped_file(const std::filesystem::path& path, std::string_view label) : path_(path.string()) {
        // What the path names is checked before it is opened (a FIFO or device
        // is never opened), and again on the descriptor (it may have changed);
        // O_NONBLOCK: should it be a FIFO by then, the open does not wait for a writer.
        struct stat pre {};
        if (::stat(path.c_str(), &pre) == 0 && !S_ISREG(pre.st_mode))
            LOWBIT_THROW(errc::io, std::string(label) + ": '" + path.string() + "' is " + kind_of(pre.st_mode) +
                                       ", not a regular file");
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) fail(label, path, "cannot open");
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            const int e = errno;
            ::close(fd);
            errno = e;
            fail(label, path, "cannot stat");
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd);
            LOWBIT_THROW(errc::io, std::string(label) + ": '" + path.string() + "' is " + kind_of(st.st_mode) +
                                       ", not a regular file");
        }
        size_ = static_cast<std::size_t>(st.st_size);
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                const int e = errno;
                ::close(fd);
                errno = e;
                fail(label, path, "cannot map");
            }
            data_ = static_cast<const std::byte*>(p);
            slot_ = live_files::get().add_map(data_, size_, path_.c_str());
        }
        ::close(fd);  // the mapping outlives the descriptor
    }
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    ~mapped_file() override {
        live_files::get().remove_map(slot_);
        if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    }
    std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

private:
    [[noreturn]] static void fail(std::string_view label, const std::filesystem::path& path, const char* what) {
        LOWBIT_THROW(errc::io, std::string(label) + ": " + what + " '" + path.string() + "': " + std::strerror(errno));
        std::abort();
    }
    std::string path_;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t slot_ = live_files::slots;
};

/// The checks on a destination before anything is written: an extension that
/// names another container than `label` is refused, and so is an existing
/// path that is not a regular file. True when the destination exists (its
/// mode in *mode).
inline bool check_destination(const std::filesystem::path& target, std::string_view label, mode_t* mode = nullptr) {
    check_output_extension(target, label);
    struct stat st {};
    if (::stat(target.c_str(), &st) != 0) return false;
    if (!S_ISREG(st.st_mode))
        LOWBIT_THROW(errc::invalid_argument, std::string(label) + ": the output '" + target.string() + "' is " +
                                                 kind_of(st.st_mode) + "; only a regular file is replaced");
    if (mode) *mode = st.st_mode;
    return true;
}

/// Owns a temporary file beside `target` until commit(); on any early exit
/// (an exception while writing) it is closed and removed, and `target` is untouched.
class atomic_file {
public:
    atomic_file(std::filesystem::path target, std::string_view label) : target_(std::move(target)), label_(label) {
        mode_t mode = 0;
        const bool replace = check_destination(target_, label_, &mode);
        static std::atomic<unsigned> counter{0};
        path_ = target_.string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd_ < 0) fail("cannot create");
        slot_ = live_files::get().add_temp(path_.c_str());
        // A replaced file keeps its permission bits (the owner may differ: only root could keep that).
        if (replace && ::fchmod(fd_, mode & 07777) != 0) fail("cannot set the permissions of");
    }
    atomic_file(const atomic_file&) = delete;
    atomic_file& operator=(const atomic_file&) = delete;
    ~atomic_file() {
        if (fd_ >= 0) ::close(fd_);
        live_files::get().remove_temp(slot_);
        if (!committed_) ::unlink(path_.c_str());
    }
    const std::filesystem::path& temp_path() const noexcept { return path_; }

    void write(std::span<const std::byte> b) {
        const auto* p = reinterpret_cast<const char*>(b.data());
        std::size_t left = b.size();
        while (left > 0) {
            const ::ssize_t n = ::write(fd_, p, left);
            if (n < 0) {
                if (errno == EINTR) continue;
                fail("cannot write");
            }
            p += n;
            left -= static_cast<std::size_t>(n);
        }
    }

    void commit() {
        // Sync before the rename, so a crash cannot leave the target name on a short file.
        if (::fsync(fd_) != 0) fail("cannot sync");
        const int fd = fd_;
        fd_ = -1;
        if (::close(fd) != 0) fail("cannot close");
        std::error_code ec;
        std::filesystem::rename(path_, target_, ec);
        if (ec)
            LOWBIT_THROW(errc::io, std::string(label_) + ": cannot rename '" + path_.string() + "' to '" +
                                       target_.string() + "': " + ec.message());
        committed_ = true;
        // Make the rename itself durable; a failure here leaves a complete file.
        const auto dir = target_.parent_path().empty() ? std::filesystem::path(".") : target_.parent_path();
        const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)::fsync(dfd);
            ::close(dfd);
        }
    }

private:
    [[noreturn]] void fail(const char* what) const {
        LOWBIT_THROW(errc::io, std::string(label_) + ": " + what + " '" + path_.string() + "': " + std::strerror(errno));
        std::abort();
    }
    std::filesystem::path target_, path_;
    std::string label_;
    int fd_ = -1;
    bool committed_ = false;
    std::size_t slot_ = live_files::slots;
};

/// True when both paths exist and are the same file (through links).
inline bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
    struct stat sa {}, sb {};
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

namespace signals {
inline void write_str(const char* s) noexcept {
    std::size_t n = 0;
    while (s[n]) ++n;
    while (n > 0) {
        const ::ssize_t w = ::write(STDERR_FILENO, s, n);
        if (w <= 0) return;
        s += w;
        n -= static_cast<std::size_t>(w);
    }
}
inline void remove_temporaries() noexcept {
    auto& l = live_files::get();
    for (auto& t : l.temps)
        if (const char* p = t.load()) ::unlink(p);
}
inline void on_terminate(int sig) noexcept {
    remove_temporaries();
    struct sigaction d {};
    d.sa_handler = SIG_DFL;
    ::sigemptyset(&d.sa_mask);
    ::sigaction(sig, &d, nullptr);
    ::raise(sig);  // the conventional status: killed by this signal
}
inline void on_bus(int, siginfo_t* info, void*) noexcept {
    const auto* addr = static_cast<const std::byte*>(info ? info->si_addr : nullptr);
    const char* path = nullptr;
    for (auto& m : live_files::get().maps) {
        const std::byte* b = m.base.load(std::memory_order_acquire);
        if (b && addr >= b && addr < b + m.size) path = m.path;
    }
    write_str("lowbit: i/o error: ");
    if (path) {
        write_str("input file '");
        write_str(path);
        write_str("' shrank while it was being read (truncated by another process?)\n");
    } else {
        write_str("bus error reading a mapped file (truncated by another process?)\n");
    }
    remove_temporaries();
    ::_exit(1);
}
}  // namespace signals

#else

inline bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
    std::error_code ec;
    return std::filesystem::equivalent(a, b, ec);
}

inline bool check_destination(const std::filesystem::path& target, std::string_view label) {
    check_output_extension(target, label);
    std::error_code ec;
    const auto st = std::filesystem::status(target, ec);
    if (!std::filesystem::exists(st)) return false;
    if (!std::filesystem::is_regular_file(st))
        LOWBIT_THROW(errc::invalid_argument, std::string(label) + ": the output '" + target.string() +
                                                 "' is not a regular file; only a regular file is replaced");
    return true;
}

class mapped_file final : public byte_owner {
public:
    mapped_file(const std::filesystem::path& path, std::string_view label) {
        std::ifstream in(path, std::ios::binary | std::ios::ate);
        if (!in) LOWBIT_THROW(errc::io, std::string(label) + ": cannot open '" + path.string() + "'");
        buf_.resize(static_cast<std::size_t>(in.tellg()));
        in.seekg(0);
        if (!in.read(reinterpret_cast<char*>(buf_.data()), static_cast<std::streamsize>(buf_.size())))
            LOWBIT_THROW(errc::io, std::string(label) + ": cannot read '" + path.string() + "'");
    }
    std::span<const std::byte> bytes() const noexcept { return buf_; }

private:
    std::vector<std::byte> buf_;
};

class atomic_file {
public:
    atomic_file(std::filesystem::path target, std::string_view label)
        : target_(std::move(target)), path_(target_.string() + ".tmp"), label_(label),
          out_((check_destination(target_, label), path_), std::ios::binary | std::ios::trunc) {
        if (!out_) LOWBIT_THROW(errc::io, label_ + ": cannot create '" + path_.string() + "'");
    }
    ~atomic_file() {
        if (!committed_) {
            out_.close();
            std::error_code ec;
            std::filesystem::remove(path_, ec);
        }
    }
    const std::filesystem::path& temp_path() const noexcept { return path_; }
    void write(std::span<const std::byte> b) {
        if (!out_.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size())))
            LOWBIT_THROW(errc::io, label_ + ": cannot write '" + path_.string() + "'");
    }
    void commit() {
        out_.close();
        if (!out_) LOWBIT_THROW(errc::io, label_ + ": cannot close '" + path_.string() + "'");
        std::error_code ec;
        std::filesystem::rename(path_, target_, ec);
        if (ec) LOWBIT_THROW(errc::io, label_ + ": cannot rename '" + path_.string() + "': " + ec.message());
        committed_ = true;
    }

private:
    std::filesystem::path target_, path_;
    std::string label_;
    std::ofstream out_;
    bool committed_ = false;
};

#endif

/// A pipeline's checks before any work: the destination as check_destination
/// (written as `label`), and no input is the output (by identity: a link,
/// hard link or another spelling of the same file counts).
inline void check_output_target(const std::filesystem::path& out, std::string_view label,
                                std::initializer_list<std::pair<std::string_view, const std::filesystem::path*>> inputs) {
    check_destination(out, label);
    for (const auto& [what, in] : inputs)
        if (in && same_file(*in, out))
            LOWBIT_THROW(errc::invalid_argument, "the output '" + out.string() + "' is the " + std::string(what) + " '" +
                                                     in->string() + "'; write to another path");
}

}  // namespace detail

/// For tools: SIGINT, SIGTERM and SIGHUP remove the temporary files of
/// unfinished atomic writes and then end the process by that signal (exit
/// status 128 + N); SIGBUS (an input file that shrank while mapped) prints
/// which file and exits with status 1, also leaving no temporary behind.
/// Replaces any handlers installed before; a library never calls it itself.
inline void install_signal_cleanup() {
#if LOWBIT_FILE_IO_POSIX
    (void)detail::live_files::get();  // construct the registry outside any handler
    struct sigaction a {};
    ::sigemptyset(&a.sa_mask);
    a.sa_handler = detail::signals::on_terminate;
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &a, nullptr);
    struct sigaction b {};
    ::sigemptyset(&b.sa_mask);
    b.sa_flags = SA_SIGINFO;
    b.sa_sigaction = detail::signals::on_bus;
    ::sigaction(SIGBUS, &b, nullptr);
#endif
}

LOWBIT_NAMESPACE_END
