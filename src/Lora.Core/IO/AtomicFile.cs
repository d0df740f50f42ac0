namespace Lora.Core.IO;

/// Writes a file so that readers see either the old file or the complete new one, never a part:
/// the bytes go to a temporary file in the same folder, are flushed to disk, then renamed over.
public static class AtomicFile
{
    public static void Write(string path, Action<FileStream> write)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch { /* the original error matters more */ }
            throw;
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, fs => { var b = new System.Text.UTF8Encoding(false).GetBytes(text); fs.Write(b); });

    public static void WriteAllBytes(string path, byte[] bytes) => Write(path, fs => fs.Write(bytes));

    /// Removes the temporary files a killed process left behind in dir and its subfolders (an
    /// adapter folder is written inside a run's folder). Links are not followed.
    public static void CleanStaleTemps(string dir)
    {
        if (!Directory.Exists(dir)) return;
        var walk = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true };
        foreach (var f in Directory.EnumerateFiles(dir, ".*.tmp-*", walk))
            try { File.Delete(f); } catch (IOException) { }
    }
}
