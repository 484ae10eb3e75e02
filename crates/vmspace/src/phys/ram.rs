//! Emulated RAM: physical memory as a byte vector, for the simulator and tests.

use super::{PhysError, PhysMem};
use crate::addr::{Frame, PhysAddr, PAGE_SIZE};
use alloc::vec;
use alloc::vec::Vec;

/// Physical memory `[base, base + size)` held in a `Vec<u8>`; every access is bounds-checked.
pub struct EmulatedRam {
    base: u64,
    bytes: Vec<u8>,
}

impl EmulatedRam {
    /// `size` bytes of zeroed RAM starting at physical address `base` (both page-aligned).
    pub fn new(base: PhysAddr, size: u64) -> Result<Self, PhysError> {
        if !base.is_aligned(PAGE_SIZE) || size % PAGE_SIZE != 0 {
            return Err(PhysError::Misaligned(base));
        }
        if base.checked_add(size).is_none() || usize::try_from(size).is_err() {
            return Err(PhysError::OutOfRange {
                addr: base,
                len: size,
            });
        }
        Ok(EmulatedRam {
            base: base.as_u64(),
            bytes: vec![0; size as usize],
        })
    }

    /// First physical address held.
    pub fn base(&self) -> PhysAddr {
        PhysAddr::new(self.base)
    }

    /// Bytes held.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn index(&self, addr: PhysAddr, len: usize) -> Result<usize, PhysError> {
        let off = addr.as_u64().wrapping_sub(self.base);
        if addr.as_u64() < self.base
            || off > self.bytes.len() as u64
            || (self.bytes.len() as u64 - off) < len as u64
        {
            return Err(PhysError::OutOfRange {
                addr,
                len: len as u64,
            });
        }
        Ok(off as usize)
    }

    /// The 4 KiB of a frame, for fast direct access.
    pub fn frame(&self, frame: Frame) -> Result<&[u8], PhysError> {
        let i = self.index(frame.start_address(), PAGE_SIZE as usize)?;
        Ok(&self.bytes[i..i + PAGE_SIZE as usize])
    }

    /// The 4 KiB of a frame, mutable.
    pub fn frame_mut(&mut self, frame: Frame) -> Result<&mut [u8], PhysError> {
        let i = self.index(frame.start_address(), PAGE_SIZE as usize)?;
        Ok(&mut self.bytes[i..i + PAGE_SIZE as usize])
    }
}

impl PhysMem for EmulatedRam {
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        let i = self.index(addr, buf.len())?;
        buf.copy_from_slice(&self.bytes[i..i + buf.len()]);
        Ok(())
    }

    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), PhysError> {
        let i = self.index(addr, data.len())?;
        self.bytes[i..i + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read_u32(&self, addr: PhysAddr) -> Result<u32, PhysError> {
        let i = self.index(addr, 4)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[i..i + 4]);
        Ok(u32::from_le_bytes(b))
    }

    fn write_u32(&mut self, addr: PhysAddr, v: u32) -> Result<(), PhysError> {
        let i = self.index(addr, 4)?;
        self.bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn read_u64(&self, addr: PhysAddr) -> Result<u64, PhysError> {
        let i = self.index(addr, 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[i..i + 8]);
        Ok(u64::from_le_bytes(b))
    }

    fn write_u64(&mut self, addr: PhysAddr, v: u64) -> Result<(), PhysError> {
        let i = self.index(addr, 8)?;
        self.bytes[i..i + 8].copy_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn zero_frame(&mut self, frame: Frame) -> Result<(), PhysError> {
        self.frame_mut(frame)?.fill(0);
        Ok(())
    }

    fn copy_frame(&mut self, from: Frame, to: Frame) -> Result<(), PhysError> {
        let src = self.index(from.start_address(), PAGE_SIZE as usize)?;
        let dst = self.index(to.start_address(), PAGE_SIZE as usize)?;
        self.bytes.copy_within(src..src + PAGE_SIZE as usize, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let mut ram = EmulatedRam::new(PhysAddr::new(0x10_0000), 0x2000).unwrap();
        assert!(ram.write_u64(PhysAddr::new(0x10_0000), 7).is_ok());
        assert_eq!(ram.read_u64(PhysAddr::new(0x10_0000)), Ok(7));
        assert!(ram.read_u64(PhysAddr::new(0x10_1ff9)).is_err());
        assert!(ram.read_u64(PhysAddr::new(0x0f_fff8)).is_err());
        assert!(ram.write(PhysAddr::new(u64::MAX - 1), &[1, 2, 3]).is_err());
        let f = Frame::containing(PhysAddr::new(0x10_0000));
        let g = Frame::containing(PhysAddr::new(0x10_1000));
        ram.copy_frame(f, g).unwrap();
        assert_eq!(ram.read_u64(PhysAddr::new(0x10_1000)), Ok(7));
        ram.zero_frame(g).unwrap();
        assert_eq!(ram.read_u32(PhysAddr::new(0x10_1000)), Ok(0));
        assert!(ram
            .zero_frame(Frame::containing(PhysAddr::new(0x10_2000)))
            .is_err());
        assert!(EmulatedRam::new(PhysAddr::new(0x123), 0x1000).is_err());
    }

    #[test]
    fn u32_access_is_little_endian_and_bounded() {
        let mut ram = EmulatedRam::new(PhysAddr::new(0x1000), 0x1000).unwrap();
        ram.write_u32(PhysAddr::new(0x1ffc), 0x1234_5678).unwrap();
        assert_eq!(ram.read_u32(PhysAddr::new(0x1ffc)), Ok(0x1234_5678));
        let mut b = [0u8; 1];
        ram.read(PhysAddr::new(0x1ffc), &mut b).unwrap();
        assert_eq!(b[0], 0x78);
        assert!(ram.read_u32(PhysAddr::new(0x1ffd)).is_err());
        assert!(ram.write_u32(PhysAddr::new(0xffe), 1).is_err());
        assert!(ram.read_u32(PhysAddr::new(u64::MAX - 1)).is_err());
    }
}
