using System.IO.Compression;

using Lora.Core.IO;

namespace Lora.Core.Data;

/// An IDX array (the MNIST file format): unsigned bytes and their dimensions.
public sealed record IdxArray(int[] Dims, byte[] Data)
{
    public int Count => Dims[0];
}

/// Reads IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw. Only the unsigned-byte element
/// type (0x08) is accepted, which is what image and label files use.
public static class IdxReader
{
    // 1 Gi items (Fashion-MNIST has 47 Mi): keeps header + data inside one .NET array
    const long MaxElements = 1L << 30;

    public static IdxArray Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"IDX file not found: {path}", path);
        Lora.Core.IO.InputFile.Check(path, 4 * Lora.Core.IO.InputFile.GiB, "IDX file");
        byte[] raw;
        try
        {
            raw = IsGzip(path) ? Gunzip(path) : File.ReadAllBytes(path);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{path}: the gzip stream is corrupt or truncated ({e.Message}).", e);
        }
        return Parse(raw, path);
    }

    static bool IsGzip(string path)
    {
        using var f = File.OpenRead(path);
        return f.ReadByte() == 0x1f && f.ReadByte() == 0x8b;
    }

    /// Decompresses no more than the header says the file holds (plus one byte, to report trailing
    /// data): a small gzip that inflates to gigabytes (a "gzip bomb") is an error, not an allocation.
    static byte[] Gunzip(string path)
    {
        using var f = File.OpenRead(path);
        using var gz = new GZipStream(f, CompressionMode.Decompress);
        using var ms = new MemoryStream();
        var buffer = new byte[81920];
        long limit = 4 + 4 * 4 + MaxElements; // the largest valid file, until the header is read
        bool headerRead = false;
        int n;
        while (ms.Length <= limit && (n = gz.Read(buffer, 0, (int)Math.Min(buffer.Length, limit + 1 - ms.Length))) > 0)
        {
            ms.Write(buffer, 0, n);
            if (!headerRead && ms.Length >= 4 && ms.Length >= 4 + 4 * ms.GetBuffer()[3])
            {
                limit = Header(ms.GetBuffer().AsSpan(0, (int)ms.Length), path).Bytes;
                headerRead = true;
            }
        }
        return ms.ToArray();
    }

    /// The dimensions an IDX header declares and the byte count they imply (header + data),
    /// checked before anything is allocated for the data.
    static (int[] Dims, int HeaderBytes, long Bytes) Header(ReadOnlySpan<byte> raw, string source)
    {
        if (raw.Length < 4)
            throw new InvalidDataException($"{source}: {raw.Length} bytes is too short for an IDX header (need at least 4).");
        if (raw[0] != 0 || raw[1] != 0)
            throw new InvalidDataException($"{source}: not an IDX file (magic bytes {raw[0]:x2} {raw[1]:x2}, expected 00 00).");
        if (raw[2] != 0x08)
            throw new InvalidDataException($"{source}: IDX element type 0x{raw[2]:x2} is not supported (only unsigned bytes, 0x08).");
        int rank = raw[3];
        if (rank < 1 || rank > 4)
            throw new InvalidDataException($"{source}: IDX rank {rank} is out of range (1..4).");
        int header = 4 + 4 * rank;
        if (raw.Length < header)
            throw new InvalidDataException($"{source}: truncated header ({raw.Length} bytes, the {rank} dimensions need {header}).");
        var dims = new int[rank];
        long total = 1;
        for (int i = 0; i < rank; i++)
        {
            int o = 4 + 4 * i;
            long d = ((long)raw[o] << 24) | ((long)raw[o + 1] << 16) | ((long)raw[o + 2] << 8) | raw[o + 3];
            if (d <= 0 || d > int.MaxValue)
                throw new InvalidDataException($"{source}: dimension {i} has size {d}, which is not valid.");
            dims[i] = (int)d;
            total *= d;
            if (total > MaxElements)
                throw new InvalidDataException($"{source}: dimensions {string.Join('x', dims.Take(i + 1))} claim more than {MaxElements:N0} items, too large for an IDX file this reader accepts.");
        }
        return (dims, header, header + total);
    }

    /// Parses an IDX byte image; <paramref name="source"/> names the file in error messages.
    public static IdxArray Parse(byte[] raw, string source)
    {
        var (dims, header, expected) = Header(raw, source);
        long total = expected - header;
        if (raw.Length != expected)
            throw new InvalidDataException(
                $"{source}: dimensions {string.Join('x', dims)} need {expected} bytes but the file has {raw.Length} " +
                (raw.Length < expected ? "(truncated)." : "(trailing data)."));
        var data = new byte[total];
        Buffer.BlockCopy(raw, header, data, 0, (int)total);
        return new IdxArray(dims, data);
    }

    /// Writes raw (or gzip when the name ends in .gz) IDX unsigned-byte data; used by tests and tools.
    public static void Write(string path, int[] dims, byte[] data)
    {
        long total = dims.Aggregate(1L, (a, d) => a * d);
        if (total != data.Length) throw new ArgumentException($"dims {string.Join('x', dims)} hold {total} bytes, data has {data.Length}.");
        using var ms = new MemoryStream();
        ms.Write([0, 0, 0x08, (byte)dims.Length]);
        foreach (var d in dims) ms.Write([(byte)(d >> 24), (byte)(d >> 16), (byte)(d >> 8), (byte)d]);
        ms.Write(data);
        AtomicFile.Write(path, s =>
        {
            if (path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
            {
                using var gz = new GZipStream(s, CompressionLevel.Fastest, leaveOpen: true);
                ms.Position = 0; ms.CopyTo(gz);
            }
            else { ms.Position = 0; ms.CopyTo(s); }
        });
    }
}
