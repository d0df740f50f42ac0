using System.Runtime.InteropServices;

namespace Lora.Core.IO;

/// Every file the program reads from a user (a spec, an adapter config, images, labels, a model
/// config, weights, data sets) passes here first: it must be a regular file (not /dev/zero, a FIFO
/// or a socket, which would be read until memory runs out, or block) and no larger than the limit
/// for its kind, decided before a byte is read.
public static class InputFile
{
    public const long KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
    /// Specs, adapter configs, model configs, label lists: text a person writes.
    public const long MaxTextBytes = 16 * MiB;
    /// One image file (its pixel count is checked separately, from its header).
    public const long MaxImageBytes = 256 * MiB;

    /// Throws unless `path` is a regular file of at most `maxBytes`; `what` names it in the message
    /// ("spec", "adapter config"). Returns its size.
    public static long Check(string path, long maxBytes, string what)
    {
        if (Directory.Exists(path)) throw new InvalidDataException($"{what} '{path}' is a folder, not a file");
        if (!File.Exists(path)) throw new FileNotFoundException($"{what} '{path}' does not exist", path);
        if (KindOf(path) is { } kind && kind != "regular file")
            throw new InvalidDataException($"{what} '{path}' is a {kind}, not a regular file: refusing to read it");
        var size = new FileInfo(path).Length;
        if (size > maxBytes)
            throw new InvalidDataException($"{what} '{path}' is {size:N0} bytes, more than the {maxBytes:N0} allowed for a {what}");
        return size;
    }

    public static byte[] ReadAllBytes(string path, long maxBytes, string what)
    {
        Check(path, maxBytes, what);
        return File.ReadAllBytes(path);
    }

    public static string ReadAllText(string path, long maxBytes, string what)
    {
        Check(path, maxBytes, what);
        return File.ReadAllText(path);
    }

    public static string[] ReadAllLines(string path, long maxBytes, string what)
    {
        Check(path, maxBytes, what);
        return File.ReadAllLines(path);
    }

    public static FileStream OpenRead(string path, long maxBytes, string what)
    {
        Check(path, maxBytes, what);
        return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
    }

    // statx(2): its struct has one layout on every Linux architecture (unlike stat's).
    [DllImport("libc", SetLastError = true)]
    static extern int statx(int dirfd, string path, int flags, uint mask, byte[] buffer);

    /// "regular file", "character device", "FIFO", ... following links; null where it cannot be told
    /// (not Linux, or an old libc): then only the size limit applies.
    static string? KindOf(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        var buf = new byte[256];
        try
        {
            const int AtFdCwd = -100;
            const uint StatxType = 0x1;
            if (statx(AtFdCwd, path, 0, StatxType, buf) != 0) return null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
        int mode = BitConverter.ToUInt16(buf, 28);
        return (mode & 0xF000) switch
        {
            0x8000 => "regular file",
            0x4000 => "folder",
            0x2000 => "character device",
            0x6000 => "block device",
            0x1000 => "FIFO",
            0xC000 => "socket",
            _ => "special file",
        };
    }
}
