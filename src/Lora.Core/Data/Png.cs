using System.IO.Compression;

using Lora.Core.IO;

namespace Lora.Core.Data;

/// A minimal PNG writer (8-bit grey or RGB, no filtering, zlib via System.IO.Compression), enough
/// to write image/mask pairs that the ImageFolder and segmentation readers read back.
public static class Png
{
    static readonly uint[] crcTable = MakeCrcTable();

    /// Encodes channel-first pixels (C = 1 grey or 3 RGB) of an H×W image.
    public static byte[] Encode(ReadOnlySpan<byte> chw, int channels, int height, int width)
    {
        if (channels is not (1 or 3)) throw new ArgumentException($"PNG writing supports 1 or 3 channels, got {channels}.");
        if (chw.Length != channels * height * width) throw new ArgumentException("pixel count does not match the shape.");
        var rows = new byte[height * (1 + width * channels)];
        int plane = height * width, k = 0;
        for (int y = 0; y < height; y++)
        {
            rows[k++] = 0; // filter type: none
            for (int x = 0; x < width; x++)
                for (int c = 0; c < channels; c++)
                    rows[k++] = chw[c * plane + y * width + x];
        }
        using var z = new MemoryStream();
        using (var zs = new ZLibStream(z, CompressionLevel.Fastest, leaveOpen: true)) zs.Write(rows);

        using var png = new MemoryStream();
        png.Write([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BigEndian(ihdr, 0, (uint)width);
        BigEndian(ihdr, 4, (uint)height);
        ihdr[8] = 8; ihdr[9] = (byte)(channels == 1 ? 0 : 2); // bit depth 8; colour type grey / RGB
        Chunk(png, "IHDR", ihdr);
        Chunk(png, "IDAT", z.ToArray());
        Chunk(png, "IEND", []);
        return png.ToArray();
    }

    public static void Write(string path, ReadOnlySpan<byte> chw, int channels, int height, int width) =>
        AtomicFile.WriteAllBytes(path, Encode(chw, channels, height, width));

    static void Chunk(Stream s, string type, byte[] data)
    {
        var hdr = new byte[8];
        BigEndian(hdr, 0, (uint)data.Length);
        for (int i = 0; i < 4; i++) hdr[4 + i] = (byte)type[i];
        s.Write(hdr);
        s.Write(data);
        uint crc = 0xFFFFFFFFu;
        for (int i = 4; i < 8; i++) crc = crcTable[(crc ^ hdr[i]) & 0xFF] ^ (crc >> 8);
        foreach (var b in data) crc = crcTable[(crc ^ b) & 0xFF] ^ (crc >> 8);
        var c = new byte[4];
        BigEndian(c, 0, crc ^ 0xFFFFFFFFu);
        s.Write(c);
    }

    static void BigEndian(byte[] b, int o, uint v)
    {
        b[o] = (byte)(v >> 24); b[o + 1] = (byte)(v >> 16); b[o + 2] = (byte)(v >> 8); b[o + 3] = (byte)v;
    }

    static uint[] MakeCrcTable()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }
}
