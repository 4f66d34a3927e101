#pragma once
// Reading a file through a read-only memory map, and writing one atomically:
// to a temporary name in the destination's directory, synced, then renamed
// over the destination. Messages start with the caller's label ("safetensors").

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "../core/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <cerrno>
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

#if LOWBIT_FILE_IO_POSIX

/// A whole regular file, mapped read-only (an empty file maps to no bytes).
class mapped_file final : public byte_owner {
public:
    mapped_file(const std::filesystem::path& path, std::string_view label) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
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
            LOWBIT_THROW(errc::io, std::string(label) + ": '" + path.string() + "' is not a regular file");
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
        }
        ::close(fd);  // the mapping outlives the descriptor
    }
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    ~mapped_file() override {
        if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    }
    std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

private:
    [[noreturn]] static void fail(std::string_view label, const std::filesystem::path& path, const char* what) {
        LOWBIT_THROW(errc::io, std::string(label) + ": " + what + " '" + path.string() + "': " + std::strerror(errno));
        std::abort();
    }
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

/// Owns a temporary file beside `target` until commit(); on any early exit
/// (an exception while writing) it is closed and removed, and `target` is untouched.
class atomic_file {
public:
    atomic_file(std::filesystem::path target, std::string_view label) : target_(std::move(target)), label_(label) {
        static std::atomic<unsigned> counter{0};
        path_ = target_.string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd_ < 0) fail("cannot create");
    }
    atomic_file(const atomic_file&) = delete;
    atomic_file& operator=(const atomic_file&) = delete;
    ~atomic_file() {
        if (fd_ >= 0) ::close(fd_);
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
};

#else

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
          out_(path_, std::ios::binary | std::ios::trunc) {
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

}  // namespace detail

LOWBIT_NAMESPACE_END
