//! The example of OpenSSL's `ASYNC_start_job` man page, in Rust: a job registers the read end of a
//! pipe as its wait fd, makes it readable, pauses, and is woken when `poll` says the fd is ready.
//!
//! Its output is the eight lines the man page lists under "The expected output".

#[cfg(unix)]
fn main() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use asyncjob::{Resumed, Started, WaitCtx, WaitKey};

    static UNIQUE: u8 = 0;

    println!("Starting...");
    let ctx = WaitCtx::new();
    let msg = *b"Hello world!";

    let job = asyncjob::start(Some(&ctx), move || {
        if asyncjob::current_job().is_none() {
            println!("Not executing within a job - should not happen");
            return 0;
        }
        println!("Executing within a job");
        println!("Passed in message is: {}", String::from_utf8_lossy(&msg));

        // The pipe's two ends; the reading end is what the application waits on.
        let (mut reader, mut writer) = UnixStream::pair().expect("socketpair");
        let wait_fd = reader.as_raw_fd();
        let ctx = asyncjob::current_wait_ctx().expect("the job was started with a wait context");
        let write_end = writer.try_clone().expect("dup");
        ctx.set_wait_fd(
            WaitKey::of(&UNIQUE),
            wait_fd,
            std::ptr::null_mut(),
            // The cleanup owns the write end and closes it with the context.
            Some(Box::new(move |_, _, _| drop(write_end))),
        );
        // Normally an external event would make the fd readable later; here it is at once.
        writer.write_all(b"X").expect("write");
        asyncjob::pause();
        let mut buf = [0u8; 1];
        reader.read_exact(&mut buf).expect("read");
        println!("Resumed the job after a pause");
        1
    });

    let mut outcome = match job {
        Ok(Started::Paused(job)) => Resumed::Paused(job),
        Ok(Started::Finished(ret)) => Resumed::Finished(ret),
        Ok(Started::NoJobs(_)) | Err(_) => {
            println!("An error occurred");
            println!("Finishing");
            return;
        }
    };
    loop {
        match outcome {
            Resumed::Finished(ret) => {
                println!("Job finished with return value {ret}");
                break;
            }
            Resumed::Paused(job) => {
                println!("Job was paused");
                println!("Waiting for the job to be woken up");
                let fds = ctx.all_fds();
                assert_eq!(fds.len(), 1, "Unexpected number of fds");
                wait_readable(fds[0]);
                outcome = match job.resume() {
                    Ok(next) => next,
                    Err(refused) => panic!("resume refused: {}", refused.error),
                };
            }
        }
    }
    drop(ctx);
    println!("Finishing");
}

/// Block until `fd` is readable.
#[cfg(unix)]
fn wait_readable(fd: asyncjob::AsyncFd) {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pollfd` is a valid array of one element for the duration of the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, -1) };
    assert_eq!(ready, 1, "poll failed");
}

#[cfg(not(unix))]
fn main() {
    println!(
        "this example polls a POSIX fd; see the C library's test for the Windows HANDLE flavour"
    );
}
