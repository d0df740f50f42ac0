namespace Lora.Core.IO;

/// Writes inside a folder this program owns (a results folder, a tables folder) stay inside it.
///
/// A results folder is committed to git, so a cloned repository can carry symbolic links in it
/// (`results/&lt;hash&gt;/run.lock -> ~/.bashrc`): opening such a path "open or create" would write
/// through the link. Every folder and file the runner writes under its root is checked here first:
/// no link anywhere between the root and the file, and the path must lie under the root. The root
/// itself is the user's choice and may be a link.
public static class SafePath
{
    /// The full path of `path`, after checking that it lies under `root` and that no existing folder
    /// or file between them is a symbolic link.
    public static string Inside(string root, string path)
    {
        var fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        var full = Path.GetFullPath(path);
        var rel = Path.GetRelativePath(fullRoot, full);
        if (rel == "." ) return full;
        if (Path.IsPathRooted(rel) || rel == ".." || rel.StartsWith(".." + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new IOException($"{full} lies outside {fullRoot}: refusing to write there");
        var at = fullRoot;
        foreach (var part in rel.Split(Path.DirectorySeparatorChar))
        {
            at = Path.Combine(at, part);
            RefuseLink(at);
        }
        return full;
    }

    /// Creates `dir` (and the folders above it, up to `root`) after the same checks; returns its full path.
    public static string CreateDirectory(string root, string dir)
    {
        var full = Inside(root, dir);
        Directory.CreateDirectory(full);
        return Inside(root, full); // a link raced in while creating
    }

    /// Throws if any entry under `dir` (or dir itself) is a symbolic link: a folder whose files the
    /// runner will write, delete or resume from must hold only what a runner put there.
    public static void RefuseLinksUnder(string root, string dir)
    {
        var full = Inside(root, dir);
        if (!Directory.Exists(full)) return;
        foreach (var entry in new DirectoryInfo(full).EnumerateFileSystemInfos("*", new EnumerationOptions
                 { RecurseSubdirectories = true, AttributesToSkip = 0, IgnoreInaccessible = false }))
            if (entry.LinkTarget is { } target)
                throw new IOException($"{entry.FullName} is a symbolic link (to {target}): refusing to follow it; remove it");
    }

    /// Creates a new regular file, removing whatever stood at `path` first (a link is removed, not
    /// followed), so an existing file is never truncated or written through. Checked with `Inside`.
    public static FileStream CreateFresh(string root, string path)
    {
        var full = Inside(root, path);
        if (Path.Exists(full) || new FileInfo(full).LinkTarget is not null) File.Delete(full);
        return new FileStream(full, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
    }

    static void RefuseLink(string path)
    {
        FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
        if (info.LinkTarget is { } target)
            throw new IOException($"{path} is a symbolic link (to {target}): refusing to follow it; remove it");
    }
}
