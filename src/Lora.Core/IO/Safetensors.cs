using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.IO;

/// Reads and writes the safetensors format (8-byte little-endian header length, a JSON header of
/// name → {dtype, shape, data_offsets}, then the raw little-endian tensor bytes). Every header field
/// is checked against the file before anything is allocated, so a truncated, overlapping or lying
/// file is an <see cref="InvalidDataException"/> naming the file and the entry, never a crash or a
/// huge allocation.
public static class Safetensors
{
    /// Headers above this are refused (the reference implementation uses the same bound).
    public const long MaxHeaderBytes = 100_000_000;

    static readonly Dictionary<string, (ScalarType Type, int Size)> dtypes = new()
    {
        ["F64"] = (ScalarType.Float64, 8), ["F32"] = (ScalarType.Float32, 4), ["F16"] = (ScalarType.Float16, 2),
        ["BF16"] = (ScalarType.BFloat16, 2), ["I64"] = (ScalarType.Int64, 8), ["I32"] = (ScalarType.Int32, 4),
        ["I16"] = (ScalarType.Int16, 2), ["I8"] = (ScalarType.Int8, 1), ["U8"] = (ScalarType.Byte, 1),
        ["BOOL"] = (ScalarType.Bool, 1),
    };

    /// One tensor's entry in a header, validated.
    public sealed record Entry(string Name, string DType, long[] Shape, long Begin, long End);

    /// A validated header: tensor entries in file order, metadata, and where the data starts.
    public sealed record Header(IReadOnlyList<Entry> Entries, IReadOnlyDictionary<string, string> Metadata, long DataStart);

    /// <param name="check">runs on the validated header before any tensor data is read: a file
    /// that does not fit (an unexpected 1.5 GB tensor) is refused without reading it</param>
    public static Dictionary<string, Tensor> Load(string path, Action<Header>? check = null) => LoadWithMetadata(path, check).Tensors;

    /// Whether an entry's dtype is a floating-point one (weights; not int8, uint8 or bool).
    public static bool IsFloat(Entry e) => e.DType is "F64" or "F32" or "F16" or "BF16";

    public static (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) LoadWithMetadata(string path, Action<Header>? check = null)
    {
        using var fs = OpenRead(path);
        var header = ReadHeader(fs, path);
        check?.Invoke(header);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var e in header.Entries)
            {
                var (type, _) = dtypes[e.DType];
                var bytes = new byte[e.End - e.Begin];
                fs.Position = header.DataStart + e.Begin;
                fs.ReadExactly(bytes);
                var t = torch.empty(e.Shape, type);
                if (bytes.Length > 0) t.bytes = bytes;
                result[e.Name] = t;
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return (result, new Dictionary<string, string>(header.Metadata));
    }

    /// Reads and validates only the header (cheap: no tensor data is read).
    public static Header ReadHeader(string path)
    {
        using var fs = OpenRead(path);
        return ReadHeader(fs, path);
    }

    static FileStream OpenRead(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such safetensors file", path);
        return InputFile.OpenRead(path, long.MaxValue, "safetensors file"); // a regular file; its size is checked against its header

    }

    static Header ReadHeader(FileStream fs, string path)
    {
        long length = fs.Length;
        InvalidDataException Bad(string why) => new($"{path}: not a valid safetensors file: {why}");
        if (length < 8) throw Bad($"the file has {length} bytes, fewer than the 8-byte header length");
        Span<byte> lenBytes = stackalloc byte[8];
        fs.ReadExactly(lenBytes);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (n > (ulong)MaxHeaderBytes) throw Bad($"the header claims {n} bytes (more than the {MaxHeaderBytes} allowed)");
        if ((long)n > length - 8) throw Bad($"the header claims {n} bytes but only {length - 8} follow");
        var json = new byte[n];
        fs.ReadExactly(json);
        long dataStart = 8 + (long)n, dataLength = length - dataStart;

        // System.Text.Json defers UTF-8 validation of names until they are read (and then throws
        // InvalidOperationException): check the whole header first. (Found by fuzzing.)
        try { new UTF8Encoding(false, throwOnInvalidBytes: true).GetCharCount(json); }
        catch (DecoderFallbackException) { throw Bad("the header is not valid UTF-8"); }
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw Bad($"the header is not JSON ({e.Message})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad("the header is not a JSON object");
            var entries = new List<Entry>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "__metadata__")
                {
                    if (p.Value.ValueKind != JsonValueKind.Object) throw Bad("__metadata__ is not an object");
                    foreach (var m in p.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw Bad($"__metadata__.{m.Name} is not a string");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                entries.Add(ParseEntry(p, dataLength, Bad));
            }
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var e in entries)
                if (!names.Add(e.Name)) throw Bad($"tensor '{e.Name}' appears twice");
            // Sorted by offset, entries must tile the data region exactly: no overlap, no hole.
            long expected = 0;
            foreach (var e in entries.OrderBy(e => e.Begin).ThenBy(e => e.End))
            {
                if (e.Begin != expected)
                    throw Bad(e.Begin < expected
                        ? $"tensor '{e.Name}' (bytes {e.Begin}..{e.End}) overlaps the tensor before it"
                        : $"bytes {expected}..{e.Begin} before tensor '{e.Name}' belong to no tensor");
                expected = e.End;
            }
            if (expected != dataLength)
                throw Bad($"the tensors cover {expected} bytes of data but the file holds {dataLength}");
            return new Header(entries, metadata, dataStart);
        }
    }

    static Entry ParseEntry(JsonProperty p, long dataLength, Func<string, InvalidDataException> bad)
    {
        var v = p.Value;
        string where = $"tensor '{p.Name}'";
        if (v.ValueKind != JsonValueKind.Object) throw bad($"{where} is not an object");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw bad($"{where} has no dtype");
        var dtype = dt.GetString()!;
        if (!dtypes.TryGetValue(dtype, out var info))
            throw bad($"{where} has dtype {dtype}, not one of {string.Join(", ", dtypes.Keys)}");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw bad($"{where} has no shape");
        var shape = new long[sh.GetArrayLength()];
        long numel = 1;
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var dim) || dim < 0)
                throw bad($"{where} has a shape entry that is not a non-negative integer");
            shape[i++] = dim;
            try { numel = checked(numel * dim); }
            catch (OverflowException) { throw bad($"{where} has a shape whose size overflows"); }
        }
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw bad($"{where} has no data_offsets [begin, end]");
        var b = off[0]; var e = off[1];
        if (b.ValueKind != JsonValueKind.Number || e.ValueKind != JsonValueKind.Number
            || !b.TryGetInt64(out var begin) || !e.TryGetInt64(out var end) || begin < 0 || end < begin)
            throw bad($"{where} has data_offsets that are not 0 ≤ begin ≤ end");
        if (end > dataLength)
            throw bad($"{where} ends at byte {end} of the data but the file holds {dataLength} bytes of data");
        long bytes;
        try { bytes = checked(numel * info.Size); }
        catch (OverflowException) { throw bad($"{where} has a shape whose size overflows"); }
        if (end - begin != bytes)
            throw bad($"{where} is {dtype} [{string.Join(", ", shape)}] = {bytes} bytes but its data_offsets span {end - begin}");
        return new Entry(p.Name, dtype, shape, begin, end);
    }

    /// Writes tensors (any device/layout; copied to contiguous CPU) in the order given, atomically
    /// (a temporary file beside the target, then a rename).
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var items = tensors.ToList();
        var header = new Dictionary<string, object>(StringComparer.Ordinal);
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, t) in items)
        {
            if (name == "__metadata__" || !names.Add(name)) throw new ArgumentException($"tensor name '{name}' is reserved or repeated");
            long size = t.NumberOfElements * t.ElementSize;
            header[name] = new Dictionary<string, object>
            {
                ["dtype"] = DTypeName(t.dtype, name),
                ["shape"] = t.shape,
                ["data_offsets"] = new[] { offset, offset + size },
            };
            offset += size;
        }
        var json = JsonSerializer.SerializeToUtf8Bytes(header);
        int pad = (8 - json.Length % 8) % 8;
        var full = new byte[json.Length + pad];
        json.CopyTo(full, 0);
        for (int k = json.Length; k < full.Length; k++) full[k] = (byte)' ';

        AtomicFile.Write(path, fs =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)full.Length);
            fs.Write(len);
            fs.Write(full);
            foreach (var (_, t) in items)
            {
                using var c = t.detach().cpu().contiguous();
                if (c.NumberOfElements > 0) fs.Write(c.bytes);
            }
        });
    }

    static string DTypeName(ScalarType t, string name)
    {
        foreach (var (k, v) in dtypes) if (v.Type == t) return k;
        throw new ArgumentException($"tensor '{name}' has dtype {t}, which safetensors cannot hold here");
    }
}
